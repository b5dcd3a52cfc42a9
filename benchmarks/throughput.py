"""The backbone alone on in-memory images: the ceiling for the features stage's images/s, on any Keras backend.

Builds the model and its compiled function exactly as stages/features.py does (devices.use, prepare_device,
build_extractor, Extractor: same device choice, mixed precision on a GPU, padding where the backend compiles per
shape) and feeds it uint8 batches from host memory with the stage's batch shapes (each part in full batches,
then its shorter last batch), one batch in flight while the last one's features are fetched, as write_features
does. Timed from the first call (its trace or compile included, as in the stage's own timer) to the last
features on the host. The end-to-end figure to compare with is the stage's log line, `features: N images in S s`.

    python -m benchmarks.throughput --backend jax --image-size 128 --batch-size 64 --parts 1280 320 400

Prints one JSON line: backend, device, import and build seconds, model_only_img_s (first call included) and
model_only_steady_img_s (a few more full batches after the run, one at a time: no tracing or compiling).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import time

import numpy as np

STEADY_BATCHES = 3


def batch_sizes(part_sizes: list[int], batch_size: int) -> list[int]:
    """The batch lengths the features stage feeds the model: each part in full batches, then its rest."""
    sizes = []
    for n in part_sizes:
        sizes += [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    return sizes


def model_only(
    backend_name: str, backbone: str, weights: str | None, image_size: int, batch_size: int, part_sizes: list[int]
) -> dict:
    """Time the stage's Extractor over in-memory batches shaped like the stage's; returns figures as a dict.
    Call after stages.devices.use(backend_name)."""
    from transfer.core import devices
    from transfer.features.backbones import build_extractor
    from transfer.features.compiled_backbone import Extractor

    start = time.perf_counter()
    device = devices.prepare_device(backend_name)
    model = build_extractor(backbone, weights, image_size)
    extractor = Extractor(model, backend_name, batch_size, device.startswith("GPU"))
    # uint8 in host memory, as the stage's decoder hands batches over: copying them to the device is the model's.
    images = np.random.default_rng(0).integers(0, 256, (batch_size, image_size, image_size, 3), dtype=np.uint8)
    built = time.perf_counter()
    sizes = batch_sizes(part_sizes, batch_size)
    in_flight = None
    for n in sizes:  # as write_features: launch a batch, then fetch the one before it
        launched = extractor.start(images[:n])
        if in_flight is not None:
            extractor.finish(in_flight)
        in_flight = launched
    extractor.finish(in_flight)
    done = time.perf_counter()
    total = sum(sizes)
    # Steady state, apart: a few more full batches, one at a time, nothing left to trace or compile.
    t0 = time.perf_counter()
    for _ in range(STEADY_BATCHES):
        extractor(images)
    steady = batch_size * STEADY_BATCHES / (time.perf_counter() - t0)
    return {
        "backend": backend_name,
        "device": device,
        "build_s": built - start,
        "images": total,
        "batch_size": batch_size,
        "image_size": image_size,
        "model_only_s": done - built,
        "model_only_img_s": total / (done - built),
        "model_only_steady_img_s": steady,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="tensorflow", help="Keras backend: tensorflow, jax or torch")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--weights", default="none", help="imagenet, none (random init: same speed) or a file")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--parts", type=int, nargs="+", default=[1024], help="image count of each split part")
    args = parser.parse_args()

    import psutil

    from transfer.core import devices

    born = psutil.Process().create_time()
    keras = devices.use(args.backend)  # imports the backend: the fixed start-up cost of every stage that uses it
    imported = time.time() - born
    weights = None if args.weights.lower() in ("none", "null") else args.weights
    result = model_only(args.backend, args.backbone, weights, args.image_size, args.batch_size, args.parts)
    result.update(import_s=imported, keras=keras.__version__, backend_version=importlib.metadata.version(args.backend))
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
