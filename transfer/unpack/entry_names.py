"""Archive entry names as their makers meant them, made safe, and which entries are never data (and why)."""

from __future__ import annotations

import re
import unicodedata
import zipfile
import zlib
from pathlib import Path

from transfer.core.errors import StageError
from transfer.core.images import SUFFIXES as IMAGE_SUFFIXES

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz")
ZIP_UTF8_FLAG = 0x800
ZIP_UNICODE_PATH_FIELD = 0x7075  # Info-ZIP's extra field holding the UTF-8 name beside a legacy one


def utf8_name(raw: bytes) -> str:
    """Bytes of a name as text: UTF-8 when they are, else Windows-1252/Latin-1, so the result is always valid."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def zip_name(info: zipfile.ZipInfo) -> str:
    """An entry's name as its maker meant it. Without the UTF-8 flag zipfile decodes the bytes as cp437 (the zip
    standard), but Info-ZIP on Linux and macOS writes UTF-8 bytes without setting the flag."""
    if info.flag_bits & ZIP_UTF8_FLAG:
        return info.filename
    raw = info.filename.encode("cp437")  # the bytes as stored: cp437 maps all 256 byte values
    extra = info.extra
    while len(extra) >= 4:
        field, size = int.from_bytes(extra[:2], "little"), int.from_bytes(extra[2:4], "little")
        body, extra = extra[4 : 4 + size], extra[4 + size :]
        if (
            field == ZIP_UNICODE_PATH_FIELD
            and len(body) > 5
            and body[0] == 1
            and int.from_bytes(body[1:5], "little") == zlib.crc32(raw)
        ):
            return body[5:].decode("utf-8", "replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return info.filename  # cp437, what old Windows tools write


def tar_name(name: str) -> str:
    """tarfile (opened with surrogateescape) keeps non-UTF-8 bytes as surrogates, which DVC cannot encode."""
    return utf8_name(name.encode("utf-8", "surrogateescape"))


def entry_parts(name: str) -> tuple[str, ...]:
    """The NFC path components of an entry name; backslashes are separators (old Windows tools write them)."""
    return tuple(
        unicodedata.normalize("NFC", part) for part in name.replace("\\", "/").split("/") if part not in ("", ".")
    )


def safe_parts(name: str, archive: Path) -> tuple[str, ...]:
    text = name.replace("\\", "/")
    parts = entry_parts(name)
    # A colon is an ordinary character here (macOS writes a `/` typed in Finder as one); only a drive letter
    # (`C:`, `C:evil`) would lead elsewhere on Windows.
    drive = bool(parts) and re.match(r"[A-Za-z]:", parts[0]) is not None
    if text.startswith("/") or ".." in parts or drive:
        raise StageError(
            f"{archive}: entry {name!r} would be written outside the extraction folder; refusing an unsafe archive"
        )
    return parts


def ignored(parts: tuple[str, ...]) -> bool:
    """macOS resource forks and hidden files: never data, whatever their suffix says."""
    return any(part == "__MACOSX" or part.startswith(".") for part in parts)


def ignored_reason(parts: tuple[str, ...]) -> str:
    """Why an ignored entry is left out, for metrics/data.json."""
    name = parts[-1]
    if "__MACOSX" in parts:
        return "macOS resource fork (in __MACOSX/), not an image"
    if name.startswith("._"):
        return "AppleDouble file (macOS metadata written beside the real file), not an image"
    if name == ".DS_Store":
        return "macOS folder settings file (.DS_Store), not an image"
    if hidden := next((part for part in parts[:-1] if part.startswith(".")), None):
        return f"inside the hidden folder {hidden}; rename the folder without the leading dot to include it"
    return "hidden file (its name starts with a dot); rename it without the dot to include it"


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def is_archive_name(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)
