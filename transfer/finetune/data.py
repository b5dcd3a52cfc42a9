"""The images fine-tuning reads, from the decoder workers (transfer/features/decode_pool.py): each epoch's
training images in a seeded order and augmented with seeded crops and flips (transfer/core/images.py), the
validation and test images as the features stage sees them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from transfer.core.errors import StageError
from transfer.core.manifests import read_manifests


def manifests(images_dir: Path, split_dir: Path, classes: list[str]) -> dict[str, tuple[list[str], np.ndarray, list]]:
    """{part: (image files, int32 labels in classes' order, paths as the manifest writes them)} for train, val, test."""
    index = {name: i for i, name in enumerate(classes)}
    parts = {}
    for part, frame in read_manifests(split_dir).items():
        unknown = set(frame["label"]) - set(index)
        if unknown:
            raise StageError(f"{split_dir}/{part}.csv has labels the cached features lack: {sorted(unknown)[:5]}")
        files = [str(Path(images_dir) / p) for p in frame["path"]]
        parts[part] = (files, frame["label"].map(index).to_numpy(np.int32), frame["path"].tolist())
    return parts


def epoch_plan(n: int, seed: int, epoch: int) -> tuple[np.ndarray, list[int]]:
    """The order of the n training images in this epoch and each one's augmentation seed: drawn from (seed, epoch)
    alone, so a run resumed at any epoch sees what an uninterrupted one sees."""
    rng = np.random.default_rng([seed, epoch])
    return rng.permutation(n), rng.integers(0, 2**63 - 1, n).tolist()


def training_batches(decoder, paths: list[str], labels: np.ndarray, seed: int, epoch: int) -> Iterator:
    """(uint8 images, labels) batches of one epoch, shuffled and augmented."""
    order, seeds = epoch_plan(len(paths), seed, epoch)
    shuffled = [paths[i] for i in order]
    start = 0
    for images in decoder.batches(shuffled, seeds):
        yield images, labels[order[start : start + len(images)]]
        start += len(images)
