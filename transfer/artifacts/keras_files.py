"""Byte-stable `.keras` files: the same model, saved by any process at any time, gives the same bytes.

A Keras 3 `.keras` file is a zip of metadata.json (which holds the save time), config.json (whose
`shared_object_id` numbers are Python id()s of shared objects, so they change from process to process) and
model.weights.h5 (whose zip entry carries the write time). save_model() saves with Keras and rewrites the zip:
metadata.json without `date_saved`; the shared_object_id numbers renumbered 1, 2, ... in order of first
appearance (the loader only matches equal numbers to share one object, so equal stays equal and distinct stays
distinct); the entries in a fixed order with a fixed time and permissions, stored uncompressed as Keras stores
them. The weights file is copied unchanged: it is byte-stable already (h5py tracks no times; tests check it).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold; what Keras gives its JSON entries
FIRST = ("metadata.json", "config.json", "model.weights.h5")  # Keras's own order; anything else follows by name


def _renumber(node: object, numbers: dict[object, int]) -> object:
    if isinstance(node, dict):
        return {
            key: numbers.setdefault(value, len(numbers) + 1) if key == "shared_object_id" else _renumber(value, numbers)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_renumber(value, numbers) for value in node]
    return node


def _canonical_member(name: str, data: bytes) -> bytes:
    if name == "metadata.json":
        metadata = {key: value for key, value in json.loads(data).items() if key != "date_saved"}
        return json.dumps(metadata).encode()
    if name == "config.json":
        return json.dumps(_renumber(json.loads(data), {})).encode()
    return data


def _order(name: str) -> tuple[int, str]:
    return (FIRST.index(name), "") if name in FIRST else (len(FIRST), name)


def canonicalize(path: Path) -> None:
    """Rewrite the .keras file at path in the byte-stable form described above (atomically, in place)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.canonical")
    try:
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(tmp, "w") as dest:
            for info in sorted(source.infolist(), key=lambda i: _order(i.filename)):
                entry = zipfile.ZipInfo(info.filename, date_time=FIXED_TIME)
                entry.compress_type = info.compress_type
                entry.create_system = 3  # "Unix", whatever platform writes it
                entry.external_attr = (0o40755 if info.is_dir() else 0o100644) << 16
                if info.filename in ("metadata.json", "config.json"):
                    dest.writestr(entry, _canonical_member(info.filename, source.read(info)))
                else:  # the weights: streamed, they can be hundreds of MB
                    with source.open(info) as src, dest.open(entry, "w", force_zip64=info.file_size > 2**31) as out:
                        shutil.copyfileobj(src, out, 1 << 20)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_model(model, path: Path) -> None:
    """model.save(path) (path ends in .keras), then canonicalize(path)."""
    model.save(path)
    canonicalize(path)
