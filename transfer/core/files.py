"""Writing outputs so that the next stage never reads a half-written one: atomic renames, stable JSON, and every
file system error (a full disk, a file-size limit, a read-only file system, no permission) turned into one clear
error naming the file and what to do: here for the writers that use these helpers, and in transfer/core/cli.py for
any other write a stage makes."""

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


# What the file system answers when it will not do what a stage asks, a full disk aside: the user or the machine can
# fix each (a read-only mount, a folder of another user, a path too long, a missing input, a failing disk).
REFUSALS = {
    errno.EROFS: "the file system holding it is read-only (mounted read-only, or a read-only container layer). "
    "Run the pipeline in a checkout on a writable file system, or mount this one read-write",
    errno.EACCES: "permission denied: the folder belongs to another user or has lost its write permission (see "
    "`ls -ld` of it). Give your user write permission there (chmod u+w), or run as the folder's owner",
    errno.EPERM: "operation not permitted (an immutable file, or a file system that refuses it, see `lsattr`). "
    "Lift the restriction",
    errno.ENAMETOOLONG: "the path is longer than the file system takes. Move the project to a shorter path",
    errno.ENOENT: "no such file or folder. Run the stages before this one (`dvc repro`)",
    errno.ENOTDIR: "a part of the path is a file, not a folder. Remove the file in the way",
    errno.EISDIR: "it is a folder, not a file. Remove the folder in the way",
    errno.ELOOP: "too many levels of symbolic links. Fix the link",
    errno.EIO: "an input/output error: the disk or the network file system failed. Check the disk (dmesg)",
    errno.EMFILE: "too many open files. Raise the limit (`ulimit -n`)",
    errno.ENFILE: "too many open files on this machine. Close other programs",
    errno.ETXTBSY: "the file is busy. Stop the program using it",
    errno.EBUSY: "the file or folder is busy (a mount point, or in use). Stop what uses it",
}


def is_filesystem_error(error: BaseException) -> bool:
    """A file system error the user or the machine can fix, as opposed to a bug."""
    return is_disk_full(error) or (isinstance(error, OSError) and error.errno in REFUSALS)


def filesystem_error(error: BaseException, folder: Path, needed: int | None = None, kept: str | None = None):
    """The one-line message for a file system error: the file (else the folder), what happened, what to do."""
    if is_disk_full(error):
        return disk_full_error(error, folder, needed, kept)
    assert isinstance(error, OSError) and error.errno is not None  # is_filesystem_error
    # A link or a rename names its source first and the path it writes second: the one written is the one to name.
    path = error.filename2 or error.filename or folder
    left = kept or "nothing half-written was left where a stage reads"
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):  # refused before anything was written there
        left = "nothing was written there"
    return StageError(f"cannot use {path}: {REFUSALS[error.errno]}; then rerun; {left}")


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
def writes(folder: Path, needed: int | None = None, kept: str | None = None) -> Iterator[None]:
    """Turn a file system error inside the block (full disk, file-size limit, read-only, no permission...) into one
    StageError naming the file or `folder`; `needed`: the bytes the block writes, when known."""
    try:
        yield
    except (OSError, RuntimeError) as error:
        if not is_filesystem_error(error):
            raise
        raise filesystem_error(error, folder, needed, kept) from None


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
        with writes(final.parent, needed):
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
