"""Generate small, learnable image-folder archives in the Caltech-101 layouts, for tests and benchmarks.

Each class has its own colour and stripe direction, with noise, so even a random-init backbone at 32 px
gives features a head can learn. Layouts:
  official  zip: exactly the seven entries of the real caltech-101.zip, in order (as scripts that unpack it list them):
            caltech-101/{101_ObjectCategories.tar.gz, Annotations.tar, show_annotation.m} and their __MACOSX/
            AppleDouble forks; the tar.gz holds the stray 101_ObjectCategories/BACKGROUND_Google/tmp
  legacy    tar.gz: 101_ObjectCategories/<class>/image_0001.jpg (and BACKGROUND_Google/tmp)
  user      .zip/.tar/.tar.gz/.tar.bz2/.tar.xz with class folders at the top (or under --root)
  flowers   .tgz like TensorFlow's flower_photos: flower_photos/LICENSE.txt beside the class folders
  infozip   .zip as `zip -r` writes it on Linux: UTF-8 names without the UTF-8 flag, directory entries
  windows   .zip as old Windows tools write it: cp437 names, backslash separators, directory entries
  macos     .zip as macOS Archive Utility writes it: NFD names, directory entries, __MACOSX/ forks
  latin1    .tar with Latin-1 (not UTF-8) file names, as old tars hold them
With extras: a BACKGROUND_Google folder, grayscale and CMYK JPEGs, a truncated JPEG and a stray text file.
The zips are written byte by byte (write_zip) so that they match what those tools write, not what Python's
zipfile would.

    python -m tools.synthetic OUT.tar.gz --layout legacy --classes 5 --per-class 40 --size 64
"""

from __future__ import annotations

import argparse
import colorsys
import io
import random
import struct
import tarfile
import tempfile
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# Class names with accents and other scripts, for the layouts that test how names are encoded.
ACCENTED = ["café", "Ärger", "日本", "naïve", "Ωmega", "smörgås"]
WINDOWS_NAMES = ["café", "Ärger", "naïve", "Über"]  # all in cp437, the code page old Windows tools write
# The AppleDouble header of a macOS resource fork (._name): magic 00 05 16 07, version 2, two entries.
APPLEDOUBLE = (
    b"\x00\x05\x16\x07\x00\x02\x00\x00"
    + b"Mac OS X        "
    + b"\x00\x02"
    + b"\x00\x00\x00\x09\x00\x00\x00\x32\x00\x00\x00\x20"  # Finder info at 0x32, 32 bytes
    + b"\x00\x00\x00\x02\x00\x00\x00\x52\x00\x00\x00\x00"  # resource fork at 0x52, empty
    + bytes(32)
)
OFFICIAL_LISTING = [
    "caltech-101/101_ObjectCategories.tar.gz",
    "caltech-101/Annotations.tar",
    "caltech-101/show_annotation.m",
    "__MACOSX/._caltech-101",
    "__MACOSX/caltech-101/._101_ObjectCategories.tar.gz",
    "__MACOSX/caltech-101/._Annotations.tar",
    "__MACOSX/caltech-101/._show_annotation.m",
]
NAMES = [
    "accordion",
    "airplanes",
    "anchor",
    "ant",
    "barrel",
    "bass",
    "beaver",
    "binocular",
    "bonsai",
    "brain",
    "brontosaurus",
    "buddha",
    "butterfly",
    "camera",
    "cannon",
    "car_side",
    "ceiling_fan",
    "cellphone",
]


def class_names(n: int) -> list[str]:
    return NAMES[:n] if n <= len(NAMES) else [f"class_{i:03d}" for i in range(n)]


def make_image(class_index: int, n_classes: int, size: int, rng: np.random.Generator) -> Image.Image:
    """A noisy image whose colour and stripe orientation identify its class."""
    hue = class_index / n_classes
    base = np.array(colorsys.hsv_to_rgb(hue, 0.8, 0.9)) * 255
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = np.pi * (class_index % 4) / 4
    stripes = np.sin(2 * np.pi * 4 * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
    pixels = base[None, None, :] * (0.75 + 0.25 * stripes[..., None]) + rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_image_folders(
    root: Path,
    n_classes: int,
    per_class: int,
    size: int,
    seed: int = 0,
    image_format: str = "JPEG",
    extras: bool = True,
    names: list[str] | None = None,
) -> dict:
    """Write root/<class>/image_NNNN.<ext>; return what a correct extract stage keeps and leaves out."""
    rng = np.random.default_rng(seed)
    suffix = ".jpg" if image_format == "JPEG" else ".png"
    names = list(names[:n_classes]) if names else class_names(n_classes)
    expected = {"images_per_class": {}, "skipped": [], "excluded": []}
    for index, name in enumerate(names):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            image = make_image(index, n_classes, size, rng)
            if extras and index == 0 and i == 0:
                image = image.convert("L")  # grayscale JPEG: valid
            if extras and index == 0 and i == 1 and image_format == "JPEG":
                image = image.convert("CMYK")  # CMYK JPEG: valid
            image.save(folder / f"image_{i + 1:04d}{suffix}", image_format)
        expected["images_per_class"][name] = per_class
    if extras:
        good = io.BytesIO()
        make_image(1, n_classes, size, rng).save(good, "JPEG")
        (root / names[1] / "image_corrupt.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
        (root / names[1] / "notes.txt").write_text("not an image\n")
        expected["skipped"] = [f"{names[1]}/image_corrupt.jpg", f"{names[1]}/notes.txt"]
        background = root / "BACKGROUND_Google"
        background.mkdir()
        for i in range(3):
            make_image(i, 3, size, rng).save(background / f"image_{i + 1:04d}.jpg", "JPEG")
        (background / "tmp").write_bytes(b"\x00" * 16)  # the real tar.gz's stray non-image file
        expected["excluded"] = ["BACKGROUND_Google"]
    return expected


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


def _read_tree(root: Path, arcroot: str = "") -> dict[str, bytes]:
    prefix = f"{arcroot}/" if arcroot else ""
    return {prefix + p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _pack(source: Path, archive: Path, arcroot: str = "") -> None:
    """Pack source/* into a .zip, .tar or .tar.gz (by archive's suffix), under arcroot inside it."""
    files = sorted(p for p in source.rglob("*") if p.is_file())
    arcname = lambda p: str(Path(arcroot) / p.relative_to(source)) if arcroot else str(p.relative_to(source))  # noqa: E731
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                zf.write(path, arcname(path))
    else:
        mode = (
            "w:gz"
            if archive.name.endswith((".tar.gz", ".tgz"))
            else "w:bz2"
            if archive.name.endswith(".tar.bz2")
            else "w:xz"
            if archive.name.endswith(".tar.xz")
            else "w"
        )
        with tarfile.open(archive, mode) as tar:
            for path in files:
                tar.add(path, arcname(path))


def _official_zip(images: Path, scratch: Path, archive: Path, class_names_: list[str]) -> None:
    """The real caltech-101.zip's seven entries, in its order, as macOS's zip wrote them."""
    inner = tar_bytes(_read_tree(images, "101_ObjectCategories"), "w:gz")
    annotations = tar_bytes(
        {f"Annotations/{name}/annotation_0001.mat": b"MATLAB 5.0 MAT-file" + bytes(64) for name in class_names_}
    )
    script = b"function show_annotation(imgfile, annotation_file)\n% draws the annotation over the image\n"
    contents = {
        "caltech-101/101_ObjectCategories.tar.gz": inner,
        "caltech-101/Annotations.tar": annotations,
        "caltech-101/show_annotation.m": script,
    }
    entries = [ZipEntry(name.encode(), contents.get(name, APPLEDOUBLE)) for name in OFFICIAL_LISTING]
    write_zip(archive, entries)


def make_archive(
    archive: Path,
    layout: str = "legacy",
    n_classes: int = 5,
    per_class: int = 30,
    size: int = 64,
    seed: int = 0,
    image_format: str = "JPEG",
    extras: bool = True,
    root: str = "",
) -> dict:
    """Build an archive in one of the layouts; return the expected extract result (see make_image_folders).

    For the accented layouts (infozip, windows, macos, latin1) the expected class names are NFC."""
    archive = Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    names = {"windows": WINDOWS_NAMES, "latin1": WINDOWS_NAMES, "infozip": ACCENTED, "macos": ACCENTED}.get(layout)
    if names and n_classes > len(names):
        raise ValueError(f"layout {layout!r} has at most {len(names)} classes")
    with tempfile.TemporaryDirectory() as scratch:
        images = Path(scratch) / "images"
        expected = make_image_folders(images, n_classes, per_class, size, seed, image_format, extras, names)
        if layout == "legacy":
            _pack(images, archive, "101_ObjectCategories")
        elif layout == "user":
            _pack(images, archive, root)
        elif layout == "official":
            _official_zip(images, Path(scratch), archive, list(expected["images_per_class"]))
        elif layout == "flowers":
            files = {
                "flower_photos/LICENSE.txt": b"All images in this archive are licensed under CC-BY.\n",
                **_read_tree(images, "flower_photos"),
            }
            archive.write_bytes(tar_bytes(files, "w:gz"))
            expected["skipped"] = sorted(expected["skipped"] + ["LICENSE.txt"])
        elif layout in ("infozip", "windows", "macos"):
            files = _read_tree(images, root)
            write_zip(archive, zip_entries(files, layout))
            if layout == "macos" and not root:  # the __MACOSX/ forks sit in the class root: each is listed
                forks = [f"__MACOSX/{name.rpartition('/')[0]}/._{name.rpartition('/')[2]}" for name in files]
                expected["skipped"] = sorted(expected["skipped"] + forks)
        elif layout == "latin1":
            archive.write_bytes(tar_bytes(_read_tree(images, root), encoding="latin-1"))
        else:
            raise ValueError(f"unknown layout {layout!r}")
    return expected


LAYOUTS = ["official", "legacy", "user", "flowers", "infozip", "windows", "macos", "latin1"]


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate a small learnable image archive.")
    parser.add_argument("archive", type=Path, help="output path; .zip, .tar, .tar.gz, .tar.bz2 or .tar.xz")
    parser.add_argument("--layout", choices=LAYOUTS, default="legacy")
    parser.add_argument("--root", default="", help="folder the class folders sit in, inside the archive")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=["JPEG", "PNG"], default="JPEG")
    parser.add_argument("--no-extras", action="store_true", help="only clean images, no decoys")
    args = parser.parse_args()
    make_archive(
        args.archive,
        args.layout,
        args.classes,
        args.per_class,
        args.size,
        args.seed,
        args.format,
        not args.no_extras,
        args.root,
    )
    print(args.archive)


if __name__ == "__main__":
    main()
