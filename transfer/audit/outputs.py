"""What the audit writes to metrics/audit/, all at once (a failed run leaves the previous audit whole):

duplicates.csv    near-duplicate pairs: path_a, part_a, class_a, path_b, part_b, class_b, similarity (cosine of
                  the centred features), distance_ratio (the pair's distance over the median nearest-neighbour
                  distance); pairs across train/val/test first, closest first; at most audit.max_rows rows
label_issues.csv  likely label errors: path, part, given, suggested, given_probability, suggested_probability
                  (out of fold); most likely first; at most audit.max_rows rows
summary.json      the counts, for `dvc metrics diff` (all pairs and errors, not only the rows kept)
duplicates.png, label_issues.png   the top of each table as pictures
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from transfer.audit.dataset import Images
from transfer.audit.duplicates import Duplicates
from transfer.audit.label_issues import LabelIssues
from transfer.audit.pictures import plot_duplicates, plot_label_issues
from transfer.core.files import atomic_output, write_csv, write_json

CROSSINGS = [("train", "val"), ("train", "test"), ("val", "test")]


def duplicate_table(images: Images, duplicates: Duplicates) -> pd.DataFrame:
    """Every pair, across the split first, then closest first; within a pair the image earlier in the split first."""
    a, b = duplicates.first, duplicates.second  # a < b: train before val before test, manifest order within
    names = np.array(images.classes)
    table = pd.DataFrame(
        {
            "path_a": np.array(images.paths, dtype=object)[a],
            "part_a": images.parts[a],
            "class_a": names[images.labels[a]],
            "path_b": np.array(images.paths, dtype=object)[b],
            "part_b": images.parts[b],
            "class_b": names[images.labels[b]],
            "similarity": np.round(duplicates.similarity, 6),
            "distance_ratio": np.round(duplicates.ratio, 6),
        }
    )
    across = table["part_a"] != table["part_b"]
    return table.iloc[np.lexsort((np.arange(len(table)), ~across.to_numpy()))].reset_index(drop=True)


def label_issue_table(images: Images, issues: LabelIssues) -> pd.DataFrame:
    names = np.array(images.classes)
    return pd.DataFrame(
        {
            "path": np.array(images.paths, dtype=object)[issues.images],
            "part": images.parts[issues.images],
            "given": names[images.labels[issues.images]],
            "suggested": names[issues.suggested],
            "given_probability": np.round(issues.given_probability, 6),
            "suggested_probability": np.round(issues.suggested_probability, 6),
        }
    )


def summary(images: Images, pairs: pd.DataFrame, errors: pd.DataFrame, duplicates: Duplicates, issues: LabelIssues):
    """The counts `dvc metrics diff` shows: numbers only, per class only for the classes with something to fix."""
    crossing = {f"{x}_{y}": int(((pairs.part_a == x) & (pairs.part_b == y)).sum()) for x, y in CROSSINGS}
    across = pairs[pairs.part_a != pairs.part_b]
    test_copied = set(across.path_b[across.part_b == "test"])  # test is never part_a of a pair across the split
    per_class: dict[str, dict[str, int]] = {}
    for name in images.classes:
        counts = {
            "label_issues": int((errors.given == name).sum()),
            "duplicate_pairs_across_split": int(((across.class_a == name) | (across.class_b == name)).sum()),
        }
        if any(counts.values()):
            per_class[name] = counts
    return {
        "images": len(images.paths),
        "duplicates": {
            "pairs": len(pairs),
            "pairs_across_split": len(across),
            **crossing,
            "test_images_with_a_duplicate_outside_test": len(test_copied),
            "images_in_pairs": len(set(pairs.path_a) | set(pairs.path_b)),
            "crowded_images": duplicates.crowded,
            "median_nearest_distance": duplicates.median_nearest,
            "threshold_distance": duplicates.threshold,
        },
        "label_issues": {
            "images": len(errors),
            "in_test": int((errors.part == "test").sum()),
            "share_of_checked": len(errors) / issues.checked_images if issues.checked_images else 0.0,
            "checked_images": issues.checked_images,
            "checked_classes": issues.checked_classes,
            "unchecked_classes": len(issues.unchecked_classes),
        },
        "per_class": per_class,
    }


def write_audit(
    out_dir: Path, images: Images, duplicates: Duplicates, issues: LabelIssues, max_rows: int, images_dir: Path
) -> dict:
    """The tables, their pictures and summary.json in out_dir, replaced whole; the summary."""
    pairs, errors = duplicate_table(images, duplicates), label_issue_table(images, issues)
    counts = summary(images, pairs, errors, duplicates, issues)
    with atomic_output(Path(out_dir)) as tmp:
        tmp.mkdir()
        for name, table in (("duplicates.csv", pairs), ("label_issues.csv", errors)):
            write_csv(tmp / name, list(table.columns), table.head(max_rows).itertuples(index=False))
        write_json(tmp / "summary.json", counts)
        plot_duplicates(pairs, len(pairs), images_dir, tmp / "duplicates.png")
        plot_label_issues(errors, len(errors), images_dir, tmp / "label_issues.png")
    return counts
