"""Stage 3: a stratified, seeded train/validation/test split written as CSV manifests.

Per class, scikit-learn's train_test_split takes split.test of the images for the test set, then
split.val of the rest for validation, rounding the same way in every class. Images are never moved:
the manifests hold paths relative to data/images and the class label.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from transfer.core import cli, params
from transfer.core.errors import StageError
from transfer.core.files import atomic_output
from transfer.core.manifests import PARTS


def list_images(images_dir: Path) -> pd.DataFrame:
    """Every file under images_dir/<class>/, sorted, as (path relative to images_dir, label)."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise StageError(f"{images_dir} does not exist; run `dvc repro extract` first")
    rows = [
        (path.relative_to(images_dir).as_posix(), class_dir.name)
        for class_dir in sorted(p for p in images_dir.iterdir() if p.is_dir())
        for path in sorted(class_dir.rglob("*"))
        if path.is_file()
    ]
    if not rows:
        raise StageError(f"{images_dir} holds no images; run `dvc repro extract` first")
    return pd.DataFrame(rows, columns=["path", "label"])


def split_images(images: pd.DataFrame, test: float, val: float, seed: int) -> dict[str, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    parts: dict[str, list[pd.DataFrame]] = {part: [] for part in PARTS}
    too_small = {}
    for label, group in images.groupby("label", sort=True):
        try:
            rest, test_rows = train_test_split(group, test_size=test, random_state=seed)
            train_rows, val_rows = train_test_split(rest, test_size=val, random_state=seed)
        except ValueError:
            train_rows = ()
        if len(train_rows) == 0:
            too_small[label] = len(group)
            continue
        for part, rows in zip(PARTS, (train_rows, val_rows, test_rows), strict=True):
            parts[part].append(rows)
    if too_small:  # every such class at once, so one fix and one rerun do
        todo = "add images, lower split.test/split.val, or drop {} with data.exclude"
        if len(too_small) == 1:
            ((label, n),) = too_small.items()
            raise StageError(
                f"class {label!r} has {n} images, too few to give train, validation and test one each; "
                + todo.format("the class")
            )
        named = ", ".join(f"{label!r} ({n} images)" for label, n in too_small.items())
        raise StageError(
            f"{len(too_small)} classes have too few images to give train, validation and test one each: {named}; "
            + todo.format("them")
        )
    return {part: pd.concat(frames).sort_values(["label", "path"], ignore_index=True) for part, frames in parts.items()}


def write_manifests(parts: dict[str, pd.DataFrame], split_dir: Path) -> None:
    with atomic_output(Path(split_dir)) as tmp:
        tmp.mkdir()
        for part, frame in parts.items():
            frame.to_csv(tmp / f"{part}.csv", index=False, lineterminator="\n")


def main(images_dir: Path, split_dir: Path) -> None:
    split = params.load().split
    parts = split_images(list_images(images_dir), split.test, split.val, split.seed)
    write_manifests(parts, split_dir)
    sizes = ", ".join(f"{len(frame)} {part}" for part, frame in parts.items())
    print(f"split {sum(map(len, parts.values()))} images in {parts['train'].label.nunique()} classes: {sizes}")


if __name__ == "__main__":
    cli.stage(
        main,
        __doc__,
        images_dir="class folders of images (data/images)",
        split_dir="where train.csv, val.csv and test.csv are written (data/split)",
    )
