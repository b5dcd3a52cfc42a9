"""Stage 4: run the frozen backbone once over every image and cache the pooled features.

Runs on the Keras backend named by features.backend (TensorFlow, JAX or PyTorch), on its GPU when it has one
(mixed precision), else on the CPU (deterministic). Worker processes decode and resize images with the shared
decoder (transfer/images.py) into shared memory a few batches ahead of the model, which is compiled once for the
backend; features are appended to the .npy files as they come, so memory does not grow with the dataset.
Writes data/features/<part>/{features,labels}.npy and classes.json.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from transfer import cli, devices, params
from transfer.decoder import ImageDecoder
from transfer.errors import StageError
from transfer.extractor import Extractor
from transfer.feature_cache import write_features
from transfer.files import atomic_output, write_json
from transfer.manifests import read_manifests


def extract_features(images_dir: Path, split_dir: Path, features_dir: Path, config: params.FeaturesParams) -> dict:
    manifests = read_manifests(split_dir)
    classes = sorted(manifests["train"]["label"].unique())
    index = {label: i for i, label in enumerate(classes)}
    for part, frame in manifests.items():
        unknown = set(frame["label"]) - set(index)
        if unknown:
            raise StageError(f"{split_dir}/{part}.csv has labels missing from train.csv: {sorted(unknown)[:5]}")

    devices.use(config.backend)
    from transfer.backbones import build_extractor

    device = devices.prepare_device(config.backend)
    model = build_extractor(config.backbone, config.weights, config.image_size)  # weights checked before any image
    n_features = model.output_shape[-1]
    extractor = Extractor(model, config.backend, config.batch_size, device.startswith("GPU"))
    print(f"features: {config.backbone} ({n_features}-d) at {config.image_size}px on {device}", file=sys.stderr)

    start, total = time.perf_counter(), sum(map(len, manifests.values()))
    with atomic_output(Path(features_dir)) as tmp, ImageDecoder(config.image_size, config.batch_size) as decoder:
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
