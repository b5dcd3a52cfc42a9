"""The audit's pictures for people: the likely label errors and the near-duplicate pairs at the top of its tables,
drawn with the grid evaluate draws its top losses with (transfer/evaluation/pictures.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from transfer.evaluation.pictures import image_grid, shorten

LABEL_ISSUES_SHOWN = 16
PAIRS_SHOWN = 8  # two images each, side by side


def plot_label_issues(table: pd.DataFrame, total: int, images_dir: Path, out: Path) -> None:
    """The first rows of the label-issue table (most likely first): given class and its out-of-fold probability,
    the suggested class and its probability, the part of the split and the file."""
    cells = [
        (
            Path(images_dir) / row.path,
            f"given {row.given} ({row.given_probability:.2f})\nsuggested {row.suggested} "
            f"({row.suggested_probability:.2f})\n{row.part}: {shorten(row.path)}",
        )
        for row in table.head(LABEL_ISSUES_SHOWN).itertuples()
    ]
    title = (
        f"Likely label errors, most likely first ({min(total, LABEL_ISSUES_SHOWN)} of {total}): given class "
        "(its out-of-fold probability), suggested class"
    )
    image_grid(cells, title, out, columns=4, empty="No likely label errors found.")


def plot_duplicates(table: pd.DataFrame, total: int, images_dir: Path, out: Path) -> None:
    """The first rows of the near-duplicate table (across the split first, closest first): each pair side by side,
    with each image's part of the split, class and file, and the pair's similarity."""
    cells = []
    for row in table.head(PAIRS_SHOWN).itertuples():
        cells.append((Path(images_dir) / row.path_a, f"{row.part_a}: {shorten(row.path_a)}\n{row.class_a}"))
        similar = f"similarity {row.similarity:.3f}, distance ratio {row.distance_ratio:.2f}"
        cells.append((Path(images_dir) / row.path_b, f"{row.part_b}: {shorten(row.path_b)}\n{row.class_b}\n{similar}"))
    title = f"Near-duplicate pairs, across the split first ({min(total, PAIRS_SHOWN)} of {total})"
    image_grid(cells, title, out, columns=4, empty="No near-duplicate pairs found.")
