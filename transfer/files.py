"""Writing outputs so that the next stage never reads a half-written one: atomic renames, stable JSON."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def remove(path: Path) -> None:
    """Delete a file or a directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_output(final: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary sibling of `final` to write; rename it over `final` only if the block succeeds.

    The next stage therefore never sees a half-written file or directory. `suffix` keeps the
    extension for writers that insist on one (Keras wants `.keras`).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp{suffix}")
    remove(tmp)
    try:
        yield tmp
        remove(final)
        os.replace(tmp, final)
    finally:
        remove(tmp)


def _rounded(value: object, digits: int) -> object:
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {key: _rounded(item, digits) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item, digits) for item in value]
    return value


def write_json(path: Path, data: object, digits: int = 6) -> None:
    """Write JSON that diffs cleanly in git: sorted keys, rounded floats, trailing newline, atomic."""
    text = json.dumps(_rounded(data, digits), indent=2, sort_keys=True) + "\n"
    with atomic_output(Path(path)) as tmp:
        tmp.write_text(text, encoding="utf-8")
