"""The split's manifests: data/split/<part>.csv, one row per image (path relative to data/images, label)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from transfer.core.errors import StageError

PARTS = ("train", "val", "test")


def read_manifest(split_dir: Path, part: str) -> pd.DataFrame:
    path = Path(split_dir) / f"{part}.csv"
    if not path.is_file():
        raise StageError(f"{path} not found; run `dvc repro split` first")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def read_manifests(split_dir: Path) -> dict[str, pd.DataFrame]:
    return {part: read_manifest(split_dir, part) for part in PARTS}
