"""The cached features: written by the features stage, read by train, evaluate and export.

data/features/<part>/features.npy (float32, one row per image, in manifest order), labels.npy (int32 class
indices) and classes.json (class names in index order).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from transfer.core.errors import StageError
from transfer.core.progress import progress


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


def write_features(extractor, batches, n_images: int, n_features: int, out: Path, desc: str) -> None:
    """Run every batch through the model and append its rows to out, a float32 (n_images, n_features) .npy
    file: the same bytes as np.save, written as they come, so memory stays flat however many images.
    One batch is in flight while the one before it is copied back and written (ImageDecoder keeps both)."""
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
        "fortran_order": False,
        "shape": (n_images, n_features),
    }
    with open(out, "wb") as file, progress(desc=desc, unit="img", total=n_images) as bar:
        np.lib.format.write_array_header_1_0(file, header)

        def write(rows: np.ndarray) -> None:
            file.write(np.ascontiguousarray(rows, dtype=np.float32).data)
            bar.update(len(rows))

        in_flight = None
        for batch in batches:
            launched = extractor.start(batch)
            if in_flight is not None:
                write(extractor.finish(in_flight))
            in_flight = launched
        if in_flight is not None:
            write(extractor.finish(in_flight))
    if bar.n != n_images:
        raise StageError(f"{out}: wrote {bar.n} feature rows for {n_images} images")
