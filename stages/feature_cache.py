"""Reading the cached features: what train, evaluate and export need of the features stage's output.

data/features/<part>/features.npy (float32, one row per image, in manifest order), labels.npy (int32 class
indices) and classes.json (class names in index order).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stages.common import StageError

PARTS = ("train", "val", "test")


def load_part(features_dir: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    folder = Path(features_dir) / part
    try:
        return np.load(folder / "features.npy"), np.load(folder / "labels.npy")
    except FileNotFoundError:
        raise StageError(f"{folder} has no cached features; run `dvc repro features` first") from None


def load_classes(features_dir: Path) -> list[str]:
    path = Path(features_dir) / "classes.json"
    if not path.is_file():
        raise StageError(f"{path} not found; run `dvc repro features` first")
    return json.loads(path.read_text(encoding="utf-8"))
