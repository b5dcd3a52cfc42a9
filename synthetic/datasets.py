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

    python -m synthetic.datasets OUT.tar.gz --layout legacy --classes 5 --per-class 40 --size 64
"""

from __future__ import annotations

import argparse
import colorsys
import io
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from synthetic.archive_bytes import APPLEDOUBLE, ZipEntry, tar_bytes, write_zip, zip_entries

# Class names with accents and other scripts, for the layouts that test how names are encoded.
ACCENTED = ["café", "Ärger", "日本", "naïve", "Ωmega", "smörgås"]
WINDOWS_NAMES = ["café", "Ärger", "naïve", "Über"]  # all in cp437, the code page old Windows tools write
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
