"""Archives written byte by byte as real tools write them (Info-ZIP, old Windows tools, macOS Archive Utility, tar),
not as Python's zipfile would: fixtures for synthetic/datasets.py and tests/test_extract.py."""

from __future__ import annotations

import io
import random
import struct
import tarfile
import unicodedata
import zlib
from dataclasses import dataclass
from pathlib import Path

# The AppleDouble header of a macOS resource fork (._name): magic 00 05 16 07, version 2, two entries.
APPLEDOUBLE = (
    b"\x00\x05\x16\x07\x00\x02\x00\x00"
    + b"Mac OS X        "
    + b"\x00\x02"
    + b"\x00\x00\x00\x09\x00\x00\x00\x32\x00\x00\x00\x20"  # Finder info at 0x32, 32 bytes
    + b"\x00\x00\x00\x02\x00\x00\x00\x52\x00\x00\x00\x00"  # resource fork at 0x52, empty
    + bytes(32)
)


# --- zips written byte by byte -------------------------------------------------------------------


@dataclass
class ZipEntry:
    """One zip entry as a given tool writes it: the name's raw bytes and flags are kept exactly."""

    name: bytes
    data: bytes = b""
    is_dir: bool = False
    flags: int = 0  # bit 11 (0x800): the name is UTF-8
    system: int = 3  # "made by": 0 MS-DOS/Windows, 3 Unix
    extra: bytes = b""
    password: bytes | None = None  # traditional PKWARE encryption (ZipCrypto)


def _zipcrypto(data: bytes, password: bytes, check_byte: int) -> bytes:
    """Traditional PKWARE encryption: the 12-byte header (its last byte the CRC's high byte) and the data."""
    keys = [0x12345678, 0x23456789, 0x34567890]

    def crc_update(crc: int, byte: int) -> int:
        return zlib.crc32(bytes([byte]), crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF

    def update(byte: int) -> None:
        keys[0] = crc_update(keys[0], byte)
        keys[1] = ((keys[1] + (keys[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        keys[2] = crc_update(keys[2], keys[1] >> 24)

    for byte in password:
        update(byte)
    plain = bytes(random.Random(len(data)).randrange(256) for _ in range(11)) + bytes([check_byte]) + data
    out = bytearray()
    for byte in plain:
        temp = keys[2] | 2
        out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
        update(byte)
    return bytes(out)


def write_zip(path: Path, entries: list[ZipEntry]) -> Path:
    """Write a zip with exactly these entries, in this order: local headers, central directory, end record."""
    body, directory = bytearray(), bytearray()
    dos_time, dos_date = (12 << 11) | (30 << 5), ((2010 - 1980) << 9) | (4 << 5) | 8  # 2010-04-08 12:30
    for entry in entries:
        crc = zlib.crc32(entry.data)
        method = 8 if entry.data and not entry.is_dir else 0
        stored = entry.data
        if method:
            compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
            stored = compressor.compress(entry.data) + compressor.flush()
        flags = entry.flags
        if entry.password is not None:
            stored, flags = _zipcrypto(stored, entry.password, crc >> 24), flags | 0x1
        version = 20 if method or entry.is_dir or entry.password else 10
        if entry.system == 3:
            mode = 0o40755 if entry.is_dir else 0o100644
            external = (mode << 16) | (0x10 if entry.is_dir else 0)
        else:
            external = 0x10 if entry.is_dir else 0x20
        offset = len(body)
        fields = struct.pack(
            "<HHHHHIIIHH",
            version,
            flags,
            method,
            dos_time,
            dos_date,
            crc,
            len(stored),
            len(entry.data),
            len(entry.name),
            len(entry.extra),
        )
        body += b"PK\x03\x04" + fields + entry.name + entry.extra + stored
        directory += (
            b"PK\x01\x02"
            + struct.pack("<BB", 30 if entry.system == 3 else 20, entry.system)
            + fields
            + struct.pack("<HHHII", 0, 0, 0, external, offset)
            + entry.name
            + entry.extra
        )
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(directory), len(body), 0)
    Path(path).write_bytes(bytes(body + directory + end))
    return Path(path)


def _with_folders(files: dict[str, bytes]) -> list[tuple[str, bytes | None]]:
    """The files in order, each folder listed (data None) before its first file, as zip tools walk a tree."""
    listed, seen = [], set()
    for name, data in files.items():
        parts = name.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder not in seen:
                seen.add(folder)
                listed.append((folder, None))
        listed.append((name, data))
    return listed


INFOZIP_EXTRA = (
    bytes.fromhex("5554050003") + struct.pack("<I", 1270729800) + bytes.fromhex("75780b000104e803000004e8030000")
)


def zip_entries(files: dict[str, bytes], style: str, password: bytes | None = None) -> list[ZipEntry]:
    """Entries as a tool writes them. infozip: `zip -r` on Linux (UTF-8 bytes, no UTF-8 flag, folders, UT/ux
    extra fields); windows: old Windows tools (cp437 bytes, backslashes, folders); macos: Archive Utility (NFD
    names, folders, a __MACOSX/._name AppleDouble fork per file); python: zipfile's own (UTF-8 flag when needed)."""
    entries = []
    for name, data in _with_folders(files):
        is_dir = data is None
        if style == "infozip":
            entries.append(
                ZipEntry(
                    name.encode() + (b"/" if is_dir else b""),
                    data or b"",
                    is_dir,
                    extra=INFOZIP_EXTRA,
                    password=None if is_dir else password,
                )
            )
        elif style == "windows":
            entries.append(
                ZipEntry(
                    name.replace("/", "\\").encode("cp437") + (b"\\" if is_dir else b""),
                    data or b"",
                    is_dir,
                    system=0,
                    password=None if is_dir else password,
                )
            )
        elif style == "macos":
            nfd = unicodedata.normalize("NFD", name)
            entries.append(
                ZipEntry(
                    nfd.encode() + (b"/" if is_dir else b""), data or b"", is_dir, password=None if is_dir else password
                )
            )
        elif style == "python":
            raw = name.encode() + (b"/" if is_dir else b"")
            entries.append(ZipEntry(raw, data or b"", is_dir, flags=0 if raw.isascii() else 0x800, password=password))
        else:
            raise ValueError(f"unknown zip style {style!r}")
    if style == "macos":
        for name, data in _with_folders(files):
            if data is not None:
                folder, _, base = unicodedata.normalize("NFD", name).rpartition("/")
                fork = f"__MACOSX/{folder}/._{base}" if folder else f"__MACOSX/._{base}"
                entries.append(ZipEntry(fork.encode(), APPLEDOUBLE))
    return entries


def tar_bytes(files: dict[str, bytes], mode: str = "w", encoding: str = "utf-8", folders: bool = True) -> bytes:
    """A tar (mode "w", "w:gz", "w:bz2", "w:xz") of the files; GNU format, names in `encoding` (latin-1 for
    the old tars whose names are not UTF-8)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode, format=tarfile.GNU_FORMAT, encoding=encoding) as tar:
        for name, data in _with_folders(files) if folders else files.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1270729800
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
