"""Writing outputs so that the next stage never reads a half-written one: atomic renames, stable JSON, and a
full disk or a file-size limit turned into one clear error (every stage writes through here)."""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from transfer.core.errors import StageError

# No space left, over quota, or a file past the file-size limit (`ulimit -f`) or the file system's largest file.
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# Libraries that wrap the OS error in their own (h5py, under Keras' model.save) keep its text.
DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "File too large", "errno = 28", "errno = 27")


def is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        return True
    return isinstance(error, (OSError, RuntimeError)) and any(text in str(error) for text in DISK_FULL_TEXTS)


def free_bytes(folder: Path) -> int | None:
    """Bytes free on the disk holding `folder` (or its nearest existing parent); None when it cannot be told."""
    for candidate in (folder, *folder.parents):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(candidate).free
    return None


def disk_full_error(error: BaseException, folder: Path, needed: int | None = None, kept: str | None = None):
    """The message for a write that failed for want of space: the folder, the bytes needed, what to do."""
    needs = f"; {needed:,} bytes are needed" if needed else ""
    left = kept or "nothing half-written was left where a stage reads"
    if getattr(error, "errno", None) == errno.EFBIG or "File too large" in str(error) or "errno = 27" in str(error):
        return StageError(
            f"writing in {folder} hit the file-size limit (`ulimit -f`, or the largest file the file system "
            f"takes){needs}. Raise the limit (`ulimit -f unlimited`) or put the project on another file system, "
            f"then rerun; {left}"
        )
    free = free_bytes(Path(folder))
    return StageError(
        f"no space left on the disk holding {folder} (or over its quota){needs}"
        f"{f'; {free:,} bytes are free there' if free is not None else ''}. Free space there (or move the project "
        f"to a bigger disk), then rerun; {left}"
    )


def check_room(folder: Path, needed: int, kept: str | None = None) -> None:
    """Refuse, before writing, `needed` bytes that the disk holding `folder` has no room for."""
    free = free_bytes(Path(folder))
    if free is not None and needed > free:
        raise disk_full_error(OSError(errno.ENOSPC, "No space left on device"), folder, needed, kept)


@contextlib.contextmanager
def disk_space(folder: Path, needed: int | None = None, kept: str | None = None) -> Iterator[None]:
    """Turn a full disk or a file-size limit inside the block into one StageError naming `folder`."""
    try:
        yield
    except (OSError, RuntimeError) as error:
        if not is_disk_full(error):
            raise
        raise disk_full_error(error, folder, needed, kept) from None


def remove(path: Path) -> None:
    """Delete a file or a directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_output(final: Path, suffix: str = "", needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary sibling of `final` to write; rename it over `final` only if the block succeeds.

    The next stage therefore never sees a half-written file or directory; a full disk is one StageError (naming
    the folder, and `needed` bytes when the writer knows them) and removes the temporary. `suffix` keeps the
    extension for writers that insist on one (Keras wants `.keras`).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp{suffix}")
    remove(tmp)
    try:
        with disk_space(final.parent, needed):
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


def write_csv(path: Path, header: list[str], rows) -> None:
    """Write a CSV table: UTF-8, a header row, newline line ends, atomic."""
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def file_md5(path: Path) -> str:
    """The md5 of a file's bytes, read in chunks (what data.md5 and DVC record)."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "md5").hexdigest()
