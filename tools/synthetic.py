"""Generate small, learnable image-folder archives in the Caltech-101 layouts, for tests and benchmarks.

Each class has its own colour and stripe direction, with noise, so even a random-init backbone at 32 px
gives features a head can learn. Layouts:
  official  zip: caltech-101/101_ObjectCategories.tar.gz + Annotations.tar + __MACOSX/ decoys
  legacy    tar.gz: 101_ObjectCategories/<class>/image_0001.jpg
  user      .zip/.tar/.tar.gz with class folders at the top (or under --root)
With extras: a BACKGROUND_Google folder, grayscale and CMYK JPEGs, a truncated JPEG and a stray text file.

    python -m tools.synthetic OUT.tar.gz --layout legacy --classes 5 --per-class 40 --size 64
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

NAMES = ["accordion", "airplanes", "anchor", "ant", "barrel", "bass", "beaver", "binocular", "bonsai", "brain",
         "brontosaurus", "buddha", "butterfly", "camera", "cannon", "car_side", "ceiling_fan", "cellphone"]


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


def make_image_folders(root: Path, n_classes: int, per_class: int, size: int, seed: int = 0,
                       image_format: str = "JPEG", extras: bool = True) -> dict:
    """Write root/<class>/image_NNNN.<ext>; return what a correct extract stage keeps and leaves out."""
    rng = np.random.default_rng(seed)
    suffix = ".jpg" if image_format == "JPEG" else ".png"
    names = class_names(n_classes)
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
        expected["excluded"] = ["BACKGROUND_Google"]
    return expected


def _pack(source: Path, archive: Path, arcroot: str = "") -> None:
    """Pack source/* into a .zip, .tar or .tar.gz (by archive's suffix), under arcroot inside it."""
    files = sorted(p for p in source.rglob("*") if p.is_file())
    arcname = lambda p: str(Path(arcroot) / p.relative_to(source)) if arcroot else str(p.relative_to(source))  # noqa: E731
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                zf.write(path, arcname(path))
    else:
        mode = "w:gz" if archive.name.endswith((".tar.gz", ".tgz")) else "w"
        with tarfile.open(archive, mode) as tar:
            for path in files:
                tar.add(path, arcname(path))


def make_archive(archive: Path, layout: str = "legacy", n_classes: int = 5, per_class: int = 30, size: int = 64,
                 seed: int = 0, image_format: str = "JPEG", extras: bool = True, root: str = "") -> dict:
    """Build an archive in one of the layouts; return the expected extract result (see make_image_folders)."""
    archive = Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        images = Path(scratch) / "images"
        expected = make_image_folders(images, n_classes, per_class, size, seed, image_format, extras)
        if layout == "legacy":
            _pack(images, archive, "101_ObjectCategories")
        elif layout == "user":
            _pack(images, archive, root)
        elif layout == "official":
            inner = Path(scratch) / "zip" / "caltech-101"
            inner.mkdir(parents=True)
            _pack(images, inner / "101_ObjectCategories.tar.gz", "101_ObjectCategories")
            annotations = Path(scratch) / "annotations"
            for name in expected["images_per_class"]:
                (annotations / name).mkdir(parents=True)
                (annotations / name / "annotation_0001.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(64))
            _pack(annotations, inner / "Annotations.tar", "Annotations")
            decoys = Path(scratch) / "zip" / "__MACOSX" / "caltech-101"
            decoys.mkdir(parents=True)
            (decoys / "._101_ObjectCategories.tar.gz").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
            (decoys / "._Annotations.tar").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
            _pack(Path(scratch) / "zip", archive)
        else:
            raise ValueError(f"unknown layout {layout!r}")
    return expected


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate a small learnable image archive.")
    parser.add_argument("archive", type=Path, help="output path; .zip, .tar or .tar.gz")
    parser.add_argument("--layout", choices=["official", "legacy", "user"], default="legacy")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=["JPEG", "PNG"], default="JPEG")
    parser.add_argument("--no-extras", action="store_true", help="only clean images, no decoys")
    args = parser.parse_args()
    make_archive(args.archive, args.layout, args.classes, args.per_class, args.size, args.seed, args.format,
                 not args.no_extras)
    print(args.archive)


if __name__ == "__main__":
    main()
