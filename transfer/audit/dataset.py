"""Every image the audit looks at, in one table: the cached features of the three parts of the split, in manifest
order (train, val, test), with each image's path under data/images, its class and its part."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transfer.core.errors import StageError
from transfer.core.manifests import PARTS, read_manifest
from transfer.features.cache import load_classes


@dataclass(frozen=True)
class Images:
    features: np.ndarray  # float32 (n, d), one row per image
    labels: np.ndarray  # int class indices into classes
    classes: list[str]
    paths: list[str]  # relative to data/images, as the manifests write them
    parts: np.ndarray  # "train", "val" or "test" per image


def _feature_files(features_dir: Path) -> dict[str, np.ndarray]:
    """Each part's features.npy, memory-mapped: its shape is known before any of it is read."""
    arrays = {}
    for part in PARTS:
        path = Path(features_dir) / part / "features.npy"
        if not path.is_file():
            raise StageError(f"{path} not found; run `dvc repro features` first")
        arrays[part] = np.load(path, mmap_mode="r")
    return arrays


def feature_shape(features_dir: Path) -> tuple[int, int]:
    """(images, features per image) of the cache, read from the files' headers alone."""
    arrays = _feature_files(features_dir)
    return sum(len(array) for array in arrays.values()), arrays["train"].shape[1]


def load_images(features_dir: Path, split_dir: Path) -> Images:
    classes = load_classes(features_dir)
    arrays = _feature_files(features_dir)
    paths, parts, labels = [], [], []
    for part, array in arrays.items():
        manifest = read_manifest(split_dir, part)
        if len(manifest) != len(array):
            raise StageError(
                f"{split_dir}/{part}.csv lists {len(manifest)} images, {features_dir}/{part}/features.npy has "
                f"{len(array)} rows; rerun `dvc repro features`"
            )
        paths += manifest["path"].tolist()
        parts += [part] * len(manifest)
        try:
            labels.append(np.load(Path(features_dir) / part / "labels.npy"))
        except FileNotFoundError:
            raise StageError(f"{features_dir}/{part}/labels.npy not found; run `dvc repro features`") from None
    features = np.concatenate([np.asarray(array, dtype=np.float32) for array in arrays.values()])
    return Images(features, np.concatenate(labels).astype(np.int64), classes, paths, np.array(parts))
