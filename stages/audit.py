"""The data audit, beside train: near-duplicate images across the split and likely label errors, from the cached
features in seconds (scikit-learn and cleanlab; no Keras). Nothing else waits for it.

A test score is only honest when no test image has a near-copy in train or validation (the test would measure
memory, not transfer) and the images are in the right class folders. The audit lists both, from data/features and
data/split, in metrics/audit/ (git-tracked): duplicates.csv (transfer/audit/duplicates.py), label_issues.csv
(transfer/audit/label_issues.py), summary.json for `dvc metrics diff`, and the top of each as a picture from
data/images. What to do with them, and what the audit cannot see: docs/audit.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from transfer.audit import memory
from transfer.audit.dataset import feature_shape, load_images
from transfer.audit.duplicates import near_duplicates
from transfer.audit.label_issues import find_label_issues
from transfer.audit.outputs import write_audit
from transfer.core import cli, params


def audit(features_dir: Path, split_dir: Path, images_dir: Path, out_dir: Path, config: params.AuditParams) -> dict:
    memory.check_fits(*feature_shape(features_dir))  # before any feature is read
    images = load_images(features_dir, split_dir)
    duplicates = near_duplicates(images.features, config.duplicate_ratio)
    issues = find_label_issues(
        images.features, images.labels, len(images.classes), config.logistic_c, config.folds, config.seed
    )
    if issues.unchecked_classes:
        names = ", ".join(images.classes[i] for i in issues.unchecked_classes)
        print(f"audit: not checked for label errors (fewer images than audit.folds): {names}", file=sys.stderr)
    counts = write_audit(out_dir, images, duplicates, issues, config.max_rows, images_dir)
    pairs, errors = counts["duplicates"], counts["label_issues"]
    print(
        f"audit: {counts['images']} images: {pairs['pairs']} near-duplicate pairs ({pairs['pairs_across_split']} "
        f"across the split), {errors['images']} likely label errors ({errors['in_test']} in test) -> {out_dir}"
    )
    return counts


def main(features_dir: Path, split_dir: Path, images_dir: Path, out_dir: Path) -> None:
    audit(features_dir, split_dir, images_dir, out_dir, params.load().audit)


if __name__ == "__main__":
    cli.stage(
        main,
        __doc__,
        features_dir="cached features (data/features)",
        split_dir="train/val/test manifests, for each image's path and part (data/split)",
        images_dir="class folders of images, for the pictures (data/images)",
        out_dir="where the tables, pictures and summary.json go (metrics/audit)",
    )
