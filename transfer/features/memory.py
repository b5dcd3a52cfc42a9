"""Will the features stage fit in memory? Its peak, estimated from the params, against what the machine offers.

The model dominates: a batch's activations grow with batch_size x image_size^2, so image_size 4096 needs 256
times the memory of 256. The stage checks before it builds the model, decodes an image or writes a byte, and
names the params to change with values that fit. Figures and the largest useful image size per backbone:
docs/memory.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from transfer.core.errors import StageError
from transfer.core.machine_memory import GIB, MIB, available_memory, current_usage


@dataclass(frozen=True)
class Footprint:
    base: int  # the framework and the model's weights, resident before the first batch
    per_pixel: float  # bytes alive at the peak of a batch, per input pixel of each image in it


# Peak resident memory (VmHWM) measured with `python -m benchmarks.memory` (TensorFlow 2.21 on the CPU, random-init
# weights; 2 cores, Linux): peak = base + per_pixel x batch x image_size^2. Measured base / per_pixel, fitted on
# batches of 4 and 16 at 256 px (resnet50 also at 128 and 384 px: 207 B/px at every size):
#   resnet50 1.15 GB / 207 B, resnet101 1.30 GB / 189 B, resnet50v2 1.15 GB / 208 B,
#   efficientnetv2b0 1.06 GB / 109 B, mobilenetv3large 1.03 GB / 180 B, convnexttiny 1.30 GB / 1528 B.
# The figures below round those up by about 10 %.
FOOTPRINTS = {
    "resnet50": Footprint(1_250 * MIB, 230),
    "resnet101": Footprint(1_400 * MIB, 210),
    "resnet50v2": Footprint(1_250 * MIB, 230),
    "efficientnetv2b0": Footprint(1_150 * MIB, 120),
    "mobilenetv3large": Footprint(1_150 * MIB, 200),
    "convnexttiny": Footprint(1_400 * MIB, 1_700),
}
# JAX (XLA on the CPU) measured for resnet50: base 0.77 GB, 420 B/px, about twice TensorFlow's activations.
# PyTorch is not measured here: TensorFlow's figures stand in for it.
JAX_PER_PIXEL = 2.2
# Each decoding worker: Python, NumPy and Pillow (27 MB measured) and one decoded photo (12 megapixels: 36 MB).
WORKER = 64 * MIB


def _workers() -> int:
    import os

    return min(32, os.cpu_count() or 1)


def estimate(
    backbone: str, backend: str, image_size: int, batch: int, workers: int, on_gpu: bool = False, scale: float = 1.0
) -> dict:
    """The stage's peak memory on this machine, in bytes, by part (a batch of `batch` images); `scale` multiplies
    the model's activations per pixel (fine-tuning keeps more of them: transfer/finetune/memory.py)."""
    from transfer.features.decode_pool import slot_count

    footprint = FOOTPRINTS[backbone]
    per_pixel = footprint.per_pixel * (JAX_PER_PIXEL if backend == "jax" else 1) * scale
    pixels = batch * image_size * image_size
    return {
        # On a GPU the activations live in its own memory; the host holds the framework and the batch's pixels.
        "model": footprint.base + (4 * 3 * pixels if on_gpu else per_pixel * pixels),
        "decoded images in shared memory": slot_count(workers, image_size, batch) * pixels * 3,
        "decoding workers": workers * WORKER,
    }


def check_fits(
    config,
    largest_part: int,
    on_gpu: bool = False,
    workers: int | None = None,
    offer=None,
    batch_key: str = "features.batch_size",
    scale: float = 1.0,
) -> None:
    """Raise a StageError naming features.image_size / features.batch_size and values that fit, when the stage's
    estimated peak, less what this process holds already, exceeds the memory on offer (FeaturesParams config;
    no batch holds more images than the largest part of the split). `batch_key` names the batch size param of the
    stage checked, `scale` multiplies the activations (transfer/finetune/memory.py checks fine-tuning so)."""
    workers = workers or _workers()
    offer = offer or available_memory()
    if offer is None:
        return
    available, source = offer
    held = current_usage()

    def need(size: int, batch_size: int) -> int:
        parts = estimate(config.backbone, config.backend, size, min(batch_size, largest_part), workers, on_gpu, scale)
        return sum(parts.values()) - held

    if need(config.image_size, config.batch_size) <= available:
        return
    batch = min(config.batch_size, largest_part)
    parts = estimate(config.backbone, config.backend, config.image_size, batch, workers, on_gpu, scale)
    detail = ", ".join(f"{name} {value / GIB:.1f}" for name, value in parts.items())
    fixes = []
    rows = next((b for b in range(batch - 1, 0, -1) if need(config.image_size, b) <= available), None)
    if rows is not None:
        fixes.append(f"{batch_key} to {rows}")
    sizes = range(config.image_size - config.image_size % 32, 31, -32)
    size = next((s for s in sizes if s < config.image_size and need(s, config.batch_size) <= available), None)
    if size is not None:
        fixes.append(f"features.image_size to {size}")
    advice = " or ".join(fixes) if fixes else f"a smaller features.image_size and {batch_key}"
    raise StageError(
        f"features.image_size {config.image_size} with {batch_key} {config.batch_size} would need about "
        f"{need(config.image_size, config.batch_size) / GIB:.1f} GiB more memory ({config.backbone} on "
        f"{config.backend}, batches of {batch}; GiB: {detail}), but {available / GIB:.1f} GiB is available "
        f"({source}); set {advice} (largest useful sizes per backbone: docs/memory.md)"
    )
