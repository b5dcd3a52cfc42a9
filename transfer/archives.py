"""Unpacking zip and tar archives safely, with names as their makers meant them.

Names are written as the file system and DVC can take them: Info-ZIP's unflagged UTF-8 names read as UTF-8,
non-UTF-8 names become valid UTF-8, backslashes are separators, every name is NFC. Entries that would land outside
the target are refused; a name the file system refuses is left out and reported.
"""

from __future__ import annotations

import contextlib
import stat
import sys
import tarfile
import unicodedata
import zipfile
import zlib
from pathlib import Path

from transfer.errors import StageError
from transfer.images import SUFFIXES as IMAGE_SUFFIXES

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz")
# Refuse archives that would unpack to more than this (a zip bomb, or the wrong file): Caltech-101 is 0.15 GB.
MAX_UNPACKED_BYTES = 20 * 2**30
# Linux file systems refuse a name component longer than this many bytes.
MAX_NAME_BYTES = 255
ZIP_UTF8_FLAG = 0x800
ZIP_ENCRYPTED_FLAG = 0x1
ZIP_UNICODE_PATH_FIELD = 0x7075  # Info-ZIP's extra field holding the UTF-8 name beside a legacy one


# --- names ---------------------------------------------------------------------------------------


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
    if text.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        raise StageError(
            f"{archive}: entry {name!r} would be written outside the extraction folder; refusing an unsafe archive"
        )
    return parts


def ignored(parts: tuple[str, ...]) -> bool:
    """macOS resource forks and hidden files: never data, whatever their suffix says."""
    return any(part == "__MACOSX" or part.startswith(".") for part in parts)


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def is_archive_name(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


# --- unpacking -----------------------------------------------------------------------------------


def progress(**kwargs):
    from tqdm import tqdm

    return tqdm(file=sys.stderr, **kwargs)


class _Writer:
    """Writes entries under `dest`; a name the file system refuses is left out and noted in `skipped`."""

    def __init__(self, dest: Path, max_bytes: int, archive: Path):
        self.dest, self.max_bytes, self.archive = dest, max_bytes, archive
        self.written = 0
        self.skipped: list[dict] = []

    def _refused(self, parts: tuple[str, ...], reason: str) -> None:
        self.skipped.append({"path": "/".join(parts), "reason": reason})

    def directory(self, parts: tuple[str, ...]) -> None:
        if all(len(part.encode()) <= MAX_NAME_BYTES for part in parts):
            # On failure the files inside it are refused one by one, with the reason.
            with contextlib.suppress(OSError):
                self.dest.joinpath(*parts).mkdir(parents=True, exist_ok=True)

    def file(self, parts: tuple[str, ...], source) -> None:
        if any(len(part.encode()) > MAX_NAME_BYTES for part in parts):
            self._refused(parts, f"name longer than {MAX_NAME_BYTES} bytes, which the file system refuses")
            return
        target = self.dest.joinpath(*parts)
        if target.exists():
            self._refused(parts, "a second entry with the same name (after Unicode normalisation); the first is kept")
            return
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch(exist_ok=False)  # any name the file system refuses fails here, before a byte is read
        except OSError as error:
            self._refused(parts, f"the file system refused the name: {error.strerror or error}")
            return
        with source as src, open(target, "wb") as out:
            while chunk := src.read(1 << 20):
                self.written += len(chunk)
                if self.written > self.max_bytes:  # the sizes in an archive's headers can lie
                    raise StageError(f"{self.archive}: unpacks to more than the {self.max_bytes:,}-byte limit")
                out.write(chunk)


def _unpack_zip(archive: Path, writer: _Writer) -> None:
    with zipfile.ZipFile(archive) as zf:
        entries = []
        for info in zf.infolist():
            name = zip_name(info)
            parts = safe_parts(name, archive)
            if parts and not ignored(parts):
                entries.append((info, name, parts))
        for info, name, _ in entries:
            if info.flag_bits & ZIP_ENCRYPTED_FLAG:
                raise StageError(
                    f"{archive} is encrypted (password-protected; first encrypted entry {name!r}). Unpack it with its "
                    "password, pack the class folders again without one and point data.url at that file"
                )
        declared = sum(info.file_size for info, _, _ in entries)
        if declared > writer.max_bytes:
            raise StageError(
                f"{archive}: entries would unpack to {declared:,} bytes, over the {writer.max_bytes:,}-byte limit"
            )
        for info, name, parts in progress(iterable=entries, desc=f"unpack {archive.name}", unit="file"):
            if name.endswith(("/", "\\")):
                writer.directory(parts)
            elif stat.S_ISLNK(info.external_attr >> 16):
                link = utf8_name(zf.read(info))
                safe_parts("/".join(parts[:-1] + (link,)), archive)
                continue  # links inside the archive would only duplicate images: skip them
            else:
                try:
                    source = zf.open(info)
                except NotImplementedError as error:  # e.g. compression method 99 (AES) or LZMA variants
                    raise StageError(
                        f"{archive}: entry {name!r} cannot be read ({error}); pack it again with the "
                        "standard deflate compression and no password"
                    ) from None
                writer.file(parts, source)


def _unpack_tar(archive: Path, writer: _Writer) -> None:
    # surrogateescape: names that are not UTF-8 arrive intact, and tar_name turns them into valid UTF-8.
    with (
        open(archive, "rb") as raw,
        tarfile.open(fileobj=raw, mode="r:*", encoding="utf-8", errors="surrogateescape") as tar,
    ):
        bar = progress(total=archive.stat().st_size, desc=f"unpack {archive.name}", unit="B", unit_scale=True)
        with bar:
            for member in tar:
                bar.update(raw.tell() - bar.n)
                parts = safe_parts(tar_name(member.name), archive)
                if not parts or ignored(parts):
                    continue
                try:
                    tarfile.data_filter(member, str(writer.dest))
                except tarfile.FilterError as error:
                    raise StageError(f"{archive}: refusing an unsafe entry: {tar_name(str(error))}") from None
                if member.isdir():
                    writer.directory(parts)
                elif member.isfile():  # links would only duplicate images; devices and fifos are not data
                    writer.file(parts, tar.extractfile(member))
            # tarfile ends the listing quietly at a header cut short; a whole tar ends with a zero block.
            if tar.fileobj.tell() - tar.offset < tarfile.BLOCKSIZE:
                raise StageError(f"{archive} is truncated or corrupt (no end-of-archive marker); download it again")


def _starts_like_zip(archive: Path) -> bool:
    """A zip's first local header: what a zip cut short (its directory is at the end) still has."""
    with open(archive, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def unpack(archive: Path, dest: Path, max_bytes: int = MAX_UNPACKED_BYTES) -> list[dict]:
    """Safely unpack a zip or (compressed) tar archive into `dest`; return the entries left out, with reasons."""
    dest.mkdir(parents=True, exist_ok=True)
    writer = _Writer(dest, max_bytes, archive)
    again = "; download it again (`dvc repro -f download` if data.url is right)"
    try:
        if zipfile.is_zipfile(archive):
            _unpack_zip(archive, writer)
        elif tarfile.is_tarfile(archive):
            _unpack_tar(archive, writer)
        elif _starts_like_zip(archive):
            raise StageError(f"{archive} is truncated or corrupt (a zip with no central directory){again}")
        else:
            raise StageError(
                f"{archive} is not a zip or tar archive; check data.url in params.yaml, then run "
                "`dvc repro -f download`"
            )
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise StageError(f"{archive} is truncated or corrupt ({error}){again}") from None
    except OSError as error:
        if "CRC" in str(error) or "compressed" in str(error).lower():
            raise StageError(f"{archive} is truncated or corrupt ({error}){again}") from None
        raise
    return writer.skipped
