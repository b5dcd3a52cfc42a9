"""Fine-tuning throughput against the backbone's own forward pass and its full forward-and-backward step.

Each configuration runs in a fresh process (Keras picks its backend at import; peak memory is per process):
  forward        the features stage's model (transfer/features/backbones.py), inference only: what one image
                 costs when the backbone is frozen and its features cached;
  finetune_topN  the fine-tuning stage's model (transfer/finetune/model.py): the top N blocks and the head trained,
                 every BatchNorm frozen, Adam, one train_on_batch per step, as stages/finetune.py runs it;
  full_step      keras.applications' backbone with a softmax layer, every layer trainable and BatchNorm in
                 training mode: the tutorial's own training step (all layers, Adam).
Random images and labels, random-init weights (no download); each configuration warms up (compiles) on two
steps, then times --steps steps. Reports images/s and the peak resident memory (VmHWM) after building and after
the steps. On a GPU the stage's mixed precision applies (devices.prepare_device).

    python -m benchmarks.finetune                                   # CPU: resnet50, 128 px, batch 16 (~4 min, 2 cores)
    python -m benchmarks.finetune --backend jax --size 256 --batch 64 --steps 20 --out $OUT/finetune_gpu.json  # GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_CLASSES = 101  # Caltech-101's


def _peak_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _model(kind: str, backbone: str, size: int, backend: str, batch: int):
    """(a function running one step on (images, labels), the device) for one configuration."""
    import keras

    from transfer.core import devices
    from transfer.core.params import FeaturesParams, FinetuneParams
    from transfer.features.backbones import BACKBONES, build_extractor
    from transfer.head.training import dense_head

    device = devices.prepare_device(backend)
    if kind == "forward":  # compiled as the features stage compiles it
        from transfer.features.compiled_backbone import Extractor

        extractor = Extractor(build_extractor(backbone, None, size), backend, batch, device.startswith("GPU"))
        return (lambda x, y: extractor(x)), device
    if kind == "full_step":
        base = getattr(keras.applications, BACKBONES[backbone].constructor)(
            include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg"
        )
        images = keras.Input((size, size, 3))
        model = keras.Model(images, keras.layers.Dense(N_CLASSES, activation="softmax")(base(images)))
        model.compile(optimizer=keras.optimizers.Adam(1e-5), loss="sparse_categorical_crossentropy")
        return (lambda x, y: model.train_on_batch(x, y)), device
    from transfer.finetune.model import build

    features = FeaturesParams(backbone=backbone, backend=backend, weights=None, image_size=size, batch_size=16)
    config = FinetuneParams(epochs=1, learning_rate=1e-5, unfreeze=int(kind.removeprefix("finetune_top")),
                            batch_size=16, patience=1, seed=0)  # fmt: skip
    head = dense_head(build_extractor(backbone, None, size).output_shape[-1], N_CLASSES, 512, 0.5)
    model, _, _ = build(features, config, head)
    return (lambda x, y: model.train_on_batch(x, y)), device


def measure(kind: str, backbone: str, backend: str, size: int, batch: int, steps: int) -> dict:
    """In this process: one configuration, warmed up, timed."""
    import numpy as np

    from transfer.core import devices

    devices.use(backend)
    step, device = _model(kind, backbone, size, backend, batch)
    built = _peak_bytes()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, 3)).astype(np.uint8)
    labels = rng.integers(0, N_CLASSES, batch).astype(np.int32)
    for _ in range(2):
        np.asarray(step(images, labels))  # compile, then one more: the timed steps are steady state
    start = time.perf_counter()
    for _ in range(steps):
        np.asarray(step(images, labels))  # np.asarray waits for an asynchronous GPU
    seconds = time.perf_counter() - start
    return {
        "config": kind,
        "images_per_s": round(batch * steps / seconds, 2),
        "seconds_per_step": round(seconds / steps, 4),
        "peak_after_build_gib": round(built / 2**30, 3),
        "peak_after_steps_gib": round(_peak_bytes() / 2**30, 3),
        "device": device,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--backend", default="tensorflow")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--configs", nargs="+", default=["forward", "finetune_top1", "finetune_top3", "full_step"])
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure this configuration in this process
    args = parser.parse_args()
    shape = [args.backbone, args.backend, args.size, args.batch, args.steps]
    if args.one:
        print(json.dumps(measure(args.one, *shape)))
        return
    results = {"backbone": args.backbone, "backend": args.backend, "image_size": args.size, "batch": args.batch}
    results.update(steps=args.steps, machine=f"{platform.machine()}, {__import__('os').cpu_count()} CPUs", runs=[])
    for kind in args.configs:
        command = [sys.executable, "-m", "benchmarks.finetune", "--one", kind, "--backbone", args.backbone]
        command += ["--backend", args.backend, "--size", str(args.size), "--batch", str(args.batch)]
        command += ["--steps", str(args.steps)]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            results["runs"].append({"config": kind, "error": done.stderr.strip().splitlines()[-1:]})
            continue
        results["runs"].append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results["runs"][-1]), flush=True)
        if args.out:  # written after each configuration: a run cut short keeps what it measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    forward = next((r for r in results["runs"] if r["config"] == "forward" and "error" not in r), None)
    for run in results["runs"]:  # the ratio the docs cite: a step's time per image over the forward pass's
        if forward and "error" not in run:
            run["time_over_forward"] = round(forward["images_per_s"] / run["images_per_s"], 3)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    for run in results["runs"]:
        if forward and "error" not in run:
            print(f"{run['config']:>14}: {run['images_per_s']:8.2f} img/s, "
                  f"{forward['images_per_s'] / run['images_per_s']:5.2f}x the forward pass's time per image, "
                  f"peak {run['peak_after_steps_gib']:.2f} GiB")  # fmt: skip


if __name__ == "__main__":
    main()
