"""models/finetuned/: what the fine-tuning stage hands to export. summary.json always says what was trained;
weights.npz, only when an epoch beat the warm start on validation, holds the trained weights of the backbone (with its
preprocessing) and of the head, in the order Keras' get_weights() lists them, which export sets on a fresh copy of
the same architecture. The file is written byte-stable (fixed entry times and order), so a rerun gives the same
bytes and DVC's cache the same object."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transfer.core.errors import StageError

SUMMARY, WEIGHTS = "summary.json", "weights.npz"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold


@dataclass
class Tuned:
    extractor: list[np.ndarray]
    head: list[np.ndarray]


def save(path: Path, extractor: list[np.ndarray], head: list[np.ndarray]) -> None:
    """Write the arrays as an .npz that np.load reads: extractor_0000.npy, ..., head_0000.npy, ..."""
    named = [(f"extractor_{i:04d}", a) for i, a in enumerate(extractor)] + [
        (f"head_{i:04d}", a) for i, a in enumerate(head)
    ]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, array in named:
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=FIXED_TIME)
            entry.external_attr = 0o100644 << 16
            with archive.open(entry, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.ascontiguousarray(array), allow_pickle=False)


def write_record(folder: Path, record: dict, tuned: tuple[list, list] | None = None) -> None:
    """Write folder (models/finetuned) whole: summary.json, and the backbone's and head's weights (get_weights()
    lists) when fine-tuning kept an epoch."""
    from transfer.core.files import atomic_output, write_json

    with atomic_output(Path(folder)) as tmp:
        tmp.mkdir()
        write_json(tmp / SUMMARY, record if tuned else {**record, "unfrozen_blocks": []})
        if tuned:
            save(tmp / WEIGHTS, *tuned)


NOTHING_TRAINED = {"epochs_trained": 0, "best_epoch": 0, "unfrozen_blocks": []}


def load(folder: Path) -> Tuned | None:
    """The fine-tuned weights in folder (models/finetuned), or None when fine-tuning kept the head (or never ran)."""
    folder = Path(folder)
    if not (folder / SUMMARY).is_file():
        raise StageError(f"{folder / SUMMARY} not found; run `dvc repro finetune` first")
    if not (folder / WEIGHTS).is_file():
        return None
    try:
        with np.load(folder / WEIGHTS, allow_pickle=False) as stored:
            names = sorted(stored.files)
            return Tuned(
                [stored[n] for n in names if n.startswith("extractor_")],
                [stored[n] for n in names if n.startswith("head_")],
            )
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise StageError(f"{folder / WEIGHTS} cannot be read ({error}); run `dvc repro -f finetune`") from None


def read_summary(folder: Path) -> dict:
    return json.loads((Path(folder) / SUMMARY).read_text(encoding="utf-8"))
