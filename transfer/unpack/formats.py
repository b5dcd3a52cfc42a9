"""What a file is, when it is not an archive the extract stage reads, and whether an archive is whole.

The download stage runs `check()` before a file may enter data/raw: a zip must have its central directory, a tar
its end-of-archive blocks, a .tar.gz/.tar.bz2/.tar.xz its compressed stream's end (gzip's CRC trailer). A body
cut short with no Content-Length to tell is caught this way. Other formats are named (7-Zip, RAR, a single
compressed file, an HTML page), so the message says what the file is and what to do with it.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

REPACK = "pack the class folders as a .zip or .tar.gz instead"
# Formats users meet that the extract stage does not read: (first bytes, what it is, what to do).
FOREIGN = (
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive (.7z)", f"unpack it with 7-Zip and {REPACK}"),
    (b"Rar!\x1a\x07", "a RAR archive", f"unpack it with unrar and {REPACK}"),
    (b"\x28\xb5\x2f\xfd", "a Zstandard-compressed file (.zst), which Python's tarfile cannot read", REPACK),
    (b"%PDF", "a PDF document", "point data.url at the archive itself"),
)
COMPRESSED = {b"\x1f\x8b": ("gzip", gzip.open), b"BZh": ("bzip2", bz2.open), b"\xfd7zXZ\x00": ("xz", lzma.open)}
READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError, ValueError)


@dataclass
class Problem:
    what: str  # "a 7-Zip archive (.7z)", "a zip whose end is missing (no central directory)"
    advice: str  # what to do, for a file the user has
    incomplete: bool = False  # an archive whose end is missing: a transfer cut short, or a broken copy


def _compression(head: bytes):
    return next(((name, opener) for magic, (name, opener) in COMPRESSED.items() if head.startswith(magic)), None)


def _tar_problem(path: Path) -> Problem | None:
    """None for a whole tar (compressed or not); a Problem for one whose end is missing."""
    cut = Problem("a tar archive whose end is missing (cut short, or corrupt)", "download or copy it again", True)
    try:
        with tarfile.open(path, "r:*") as tar:
            for _ in tar:
                pass
            # tarfile ends the listing quietly where a header is cut short; a whole tar ends with zero blocks.
            if tar.fileobj.tell() - tar.offset < tarfile.BLOCKSIZE:
                return cut
            while tar.fileobj.read(1 << 20):  # to the compressed stream's end: gzip checks its CRC trailer there
                pass
    except READ_ERRORS as error:
        cut.what = f"a tar archive whose end is missing or corrupt ({error})"
        return cut
    return None


def _single_file(path: Path, head: bytes) -> Problem | None:
    """For a compressed file that is no tar: cut short before its first tar header, or one compressed file."""
    name, opener = _compression(head)
    try:
        with opener(path, "rb") as stream:
            inner = stream.read(512)
            while stream.read(1 << 20):
                pass
    except READ_ERRORS:
        return Problem(f"a {name}-compressed file whose end is missing (cut short, or corrupt)", "get it again", True)
    inside = describe_head(inner)
    return Problem(
        f"a single compressed file ({name}{f', holding {inside}' if inside else ''}), not a compressed tar archive",
        f"if it holds an archive, decompress it first; otherwise {REPACK} (tar czf data.tar.gz <folder>)",
    )


def is_zip(path: Path) -> bool:
    """Whether `path` is a zip archive. zipfile looks for the directory at the end only, and finds it inside a
    gzip-compressed zip too (stored blocks keep it as it is): a compressed stream is never a zip."""
    with open(path, "rb") as f:
        head = f.read(8)
    return not _compression(head) and zipfile.is_zipfile(path)


def describe_head(head: bytes) -> str | None:
    """Name a format the extract stage does not read, from a file's first bytes; None when unknown."""
    lower = head.lower()
    if not head:
        return "an empty file (0 bytes)"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive"
    if b"<html" in lower or b"<!doctype" in lower:
        return "an HTML page (a login, consent or error page?)"
    for magic, what, _ in FOREIGN:
        if head.startswith(magic):
            return what
    return None


def check(path: Path) -> Problem | None:
    """None when `path` is a whole zip or (compressed) tar archive; else what it is and what to do."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(512)
    if is_zip(path):
        return None
    if head.startswith(b"PK\x03\x04"):
        return Problem("a zip archive whose end is missing (no central directory)", "download or copy it again", True)
    if _compression(head) or (len(head) == 512 and tarfile.is_tarfile(path)):
        try:
            tarfile.open(path, "r:*").close()
        except READ_ERRORS:
            return _single_file(path, head) if _compression(head) else _tar_problem(path)
        return _tar_problem(path)
    for magic, what, advice in FOREIGN:
        if head.startswith(magic):
            return Problem(what, advice)
    what = describe_head(head) or f"a file starting {head[:16]!r}"
    if what.startswith("an HTML page"):
        return Problem(what, "save the archive itself, not the web page that links to it")
    return Problem(what, "point data.url at a .zip or .tar(.gz/.bz2/.xz) of class folders")
