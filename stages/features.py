"""Stage 4: run the frozen backbone once over every image and cache the pooled features.

Runs on the Keras backend named by features.backend (TensorFlow, JAX or PyTorch), on its GPU when it has one
(mixed precision), else on the CPU (deterministic). Worker processes decode and resize images with the shared
decoder (transfer/core/images.py) into shared memory a few batches ahead of the model, which is compiled once for the
backend; features are appended to the .npy files as they come, so memory does not grow with the dataset.
Writes data/features/<part>/{features,labels}.npy and classes.json.

The stage checks first that its estimated peak memory fits the machine (transfer/features/memory.py). Its workers end
with it however it ends (transfer/features/workers.py). Output is written to data/features/.partial and moved into
place at the end: a run killed before that leaves the scratch inside the output folder, where DVC removes it whether
the next `dvc repro` runs the stage again or restores data/features from its run-cache (both replace the folder whole).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from transfer.core import cli, devices, params, signals
from transfer.core.errors import StageError
from transfer.core.files import remove, write_json
from transfer.core.manifests import read_manifests
from transfer.features import memory
from transfer.features.cache import write_features
from transfer.features.compiled_backbone import Extractor
from transfer.features.decode_pool import ImageDecoder

SCRATCH = ".partial"


@contextlib.contextmanager
def output_with_scratch_inside(final: Path) -> Iterator[Path]:
    """Yield an empty folder inside `final` to write; on success its entries replace final's (classes.json
    last), on failure it is removed and final's old entries stay."""
    final = Path(final)
    created = not final.exists()
    scratch = final / SCRATCH
    remove(scratch)  # what a killed run outside DVC left
    remove(final.with_name(f".{final.name}.tmp"))  # the scratch folder of earlier versions, beside the output
    scratch.mkdir(parents=True)
    try:
        yield scratch
        for entry in final.iterdir():
            if entry.name != SCRATCH:
                remove(entry)
        for entry in sorted(scratch.iterdir(), key=lambda entry: entry.name == "classes.json"):
            os.replace(entry, final / entry.name)
    finally:
        remove(scratch)
        if created and final.is_dir() and not any(final.iterdir()):
            final.rmdir()


def extract_features(images_dir: Path, split_dir: Path, features_dir: Path, config: params.FeaturesParams) -> dict:
    manifests = read_manifests(split_dir)
    classes = sorted(manifests["train"]["label"].unique())
    index = {label: i for i, label in enumerate(classes)}
    for part, frame in manifests.items():
        unknown = set(frame["label"]) - set(index)
        if unknown:
            raise StageError(f"{split_dir}/{part}.csv has labels missing from train.csv: {sorted(unknown)[:5]}")

    largest_part = max(len(frame) for frame in manifests.values())
    batch_size = min(config.batch_size, largest_part)  # no batch holds more images than the largest part

    devices.use(config.backend)
    from transfer.features.backbones import build_extractor

    device = devices.prepare_device(config.backend)
    memory.check_fits(config, largest_part, on_gpu=device.startswith("GPU"))  # before any memory is spent
    with signals.deferred():  # weights checked before any image is read
        model = build_extractor(config.backbone, config.weights, config.image_size)
    n_features = model.output_shape[-1]
    extractor = Extractor(model, config.backend, batch_size, device.startswith("GPU"))
    print(f"features: {config.backbone} ({n_features}-d) at {config.image_size}px on {device}", file=sys.stderr)

    start, total = time.perf_counter(), sum(map(len, manifests.values()))
    with output_with_scratch_inside(features_dir) as tmp, ImageDecoder(config.image_size, batch_size) as decoder:
        for part, frame in manifests.items():
            (tmp / part).mkdir(parents=True)
            paths = [str(Path(images_dir) / p) for p in frame["path"]]
            batches = decoder.batches(paths)
            write_features(extractor, batches, len(paths), n_features, tmp / part / "features.npy", part)
            np.save(tmp / part / "labels.npy", frame["label"].map(index).to_numpy(np.int32))
        write_json(tmp / "classes.json", classes)
    seconds = time.perf_counter() - start
    print(f"features: {total} images in {seconds:.1f} s ({total / seconds:.0f} img/s) on {device}")
    return {"images": total, "seconds": seconds, "device": device, "n_features": n_features}


def main(images_dir: Path, split_dir: Path, features_dir: Path) -> None:
    extract_features(images_dir, split_dir, features_dir, params.load().features)


if __name__ == "__main__":
    cli.stage(
        main,
        __doc__,
        images_dir="class folders of images (data/images)",
        split_dir="train/val/test manifests (data/split)",
        features_dir="where the cached features are written (data/features)",
    )
