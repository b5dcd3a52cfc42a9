"""Class folders with faults planted for the data audit to find: near-duplicates (an image saved again at a lower
JPEG quality, as copy_N.jpg beside it) and label errors (an image moved into the next class's folder, as
moved_N.jpg). What was planted is returned, and written beside the archive by the command line:

    python -m synthetic.planted OUT.tar.gz --classes 5 --per-class 24 --size 48 --duplicates 6 --label-errors 6
    # OUT.tar.gz (legacy layout, 101_ObjectCategories/<class>/...) and OUT.tar.gz.planted.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from synthetic.datasets import make_image_folders

# The generator saves at Pillow's default quality, 75. Lower qualities change these small, noisy images by about as
# much as two images of a class differ in a random-init backbone's features (docs/audit.md, "What it cannot see").
COPY_QUALITY = 70


def plant(root: Path, duplicates: int, label_errors: int, quality: int = COPY_QUALITY, seed: int = 0) -> dict:
    """In root/<class>/ folders of JPEGs: save `duplicates` images again at JPEG `quality` and move `label_errors`
    others into the next class's folder, taking the classes in turn and the images at random (seeded).
    Returns {"duplicates": [[original, copy], ...], "label_errors": [[path, true class], ...]}, paths relative to
    root."""
    rng = np.random.default_rng(seed)
    classes = sorted(folder.name for folder in Path(root).iterdir() if folder.is_dir())
    files = {name: sorted(f.name for f in (Path(root) / name).iterdir() if f.is_file()) for name in classes}
    for name in classes:
        rng.shuffle(files[name])
    planted: dict[str, list[list[str]]] = {"duplicates": [], "label_errors": []}
    for n in range(duplicates):
        name = classes[n % len(classes)]
        original = files[name].pop()
        with Image.open(Path(root) / name / original) as image:
            image.convert("RGB").save(Path(root) / name / f"copy_{n}.jpg", "JPEG", quality=quality)
        planted["duplicates"].append([f"{name}/{original}", f"{name}/copy_{n}.jpg"])
    for n in range(label_errors):
        name, wrong = classes[n % len(classes)], classes[(n + 1) % len(classes)]
        shutil.move(Path(root) / name / files[name].pop(), Path(root) / wrong / f"moved_{n}.jpg")
        planted["label_errors"].append([f"{wrong}/moved_{n}.jpg", name])
    return planted


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate a learnable archive with planted audit faults.")
    parser.add_argument("archive", type=Path, help="output path, a .tar.gz")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=24)
    parser.add_argument("--size", type=int, default=48, help="image side in pixels")
    parser.add_argument("--duplicates", type=int, default=6)
    parser.add_argument("--label-errors", type=int, default=6)
    parser.add_argument("--quality", type=int, default=COPY_QUALITY, help="JPEG quality of the copies")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        images = Path(scratch) / "101_ObjectCategories"
        make_image_folders(images, args.classes, args.per_class, args.size, args.seed, extras=False)
        planted = plant(images, args.duplicates, args.label_errors, args.quality, args.seed)
        args.archive.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(args.archive, "w:gz") as tar:
            for path in sorted(p for p in images.rglob("*") if p.is_file()):
                tar.add(path, str(path.relative_to(images.parent)))
    Path(f"{args.archive}.planted.json").write_text(json.dumps(planted, indent=2) + "\n", encoding="utf-8")
    print(args.archive)


if __name__ == "__main__":
    main()
