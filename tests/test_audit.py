"""The data audit (stages/audit.py, transfer/audit/): near-duplicates and label errors planted in generated images
are listed, and few others; the threshold is relative to the data; params and memory are checked before any work.

In-process: the module's planted images go through the split and features stages' own functions (the random-init
backbone at 32 px, as tests/conftest.py's session cache), then the audit. `dvc repro` runs the stage in
tests/test_pipeline.py's end-to-end fixture.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from stages.audit import audit, main
from synthetic.planted import plant
from synthetic.repos import ROOT
from transfer.audit import memory
from transfer.audit.dataset import Images
from transfer.audit.duplicates import NEIGHBOURS, Duplicates, near_duplicates
from transfer.audit.label_issues import find_label_issues, most_probable_other
from transfer.audit.outputs import duplicate_table
from transfer.core import params
from transfer.core.errors import StageError

PLANTED_DUPLICATES, PLANTED_LABEL_ERRORS = 6, 6
CONFIG = params.AuditParams(duplicate_ratio=0.5, folds=5, logistic_c=0.01, max_rows=500, seed=0)
OUTPUTS = {"duplicates.csv", "label_issues.csv", "summary.json", "duplicates.png", "label_issues.png"}


def copies_across_the_split(split_dir: Path, pairs: list[list[str]]) -> None:
    """Put each planted copy in another part of the split than its original (test, or train for a test original):
    the leak the audit is for."""
    frames = {part: pd.read_csv(split_dir / f"{part}.csv", dtype=str) for part in ("train", "val", "test")}
    for original, copy in pairs:
        part_of = {path: part for part, frame in frames.items() for path in frame["path"]}
        if part_of[original] == part_of[copy]:
            row = frames[part_of[copy]].loc[frames[part_of[copy]]["path"] == copy]
            frames[part_of[copy]] = frames[part_of[copy]].drop(row.index)
            target = "train" if part_of[original] == "test" else "test"
            frames[target] = pd.concat([frames[target], row]).sort_values(["label", "path"], ignore_index=True)
    for part, frame in frames.items():
        frame.to_csv(split_dir / f"{part}.csv", index=False, lineterminator="\n")


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict:
    """Five generated classes of 24 images (48 px), with near-duplicates and label errors planted, split, their
    features cached, and audited into root/audit."""
    from stages.features import extract_features
    from stages.split import list_images, split_images, write_manifests
    from synthetic.datasets import make_image_folders
    from tests.helpers import SMALL_FEATURES

    root = tmp_path_factory.mktemp("audit")
    images, split, features = root / "images", root / "split", root / "features"
    make_image_folders(images, n_classes=5, per_class=24, size=48, seed=11, extras=False)
    faults = plant(images, PLANTED_DUPLICATES, PLANTED_LABEL_ERRORS, seed=11)
    write_manifests(split_images(list_images(images), 0.2, 0.2, 0), split)
    copies_across_the_split(split, faults["duplicates"])
    extract_features(images, split, features, params.FeaturesParams(**SMALL_FEATURES))
    counts = audit(features, split, images, root / "audit", CONFIG)
    return {"root": root, "images": images, "split": split, "features": features, "faults": faults, "counts": counts}


def test_planted_near_duplicates_across_the_split_are_listed_first_and_few_others(planted):
    pairs = pd.read_csv(planted["root"] / "audit" / "duplicates.csv")
    found = {frozenset(pair) for pair in zip(pairs.path_a, pairs.path_b, strict=True)}
    truth = {frozenset(pair) for pair in planted["faults"]["duplicates"]}
    assert len(found & truth) >= 4, pairs  # of 6 planted: the random-init backbone blurs the rest (docs/audit.md)
    assert len(found - truth) <= 1, pairs
    across = pairs.part_a != pairs.part_b
    assert across.sum() >= 4 and across.is_monotonic_decreasing  # every crossing pair before any other
    for row in pairs.itertuples():
        assert row.class_a == row.path_a.split("/")[0] and row.similarity > 0.9 and row.distance_ratio <= 0.5
    summary = planted["counts"]["duplicates"]
    assert summary["pairs"] == len(pairs) and summary["pairs_across_split"] == across.sum()
    assert summary["train_val"] + summary["train_test"] + summary["val_test"] == across.sum()


def test_planted_label_errors_are_listed_most_likely_first_with_their_true_class_suggested(planted):
    issues = pd.read_csv(planted["root"] / "audit" / "label_issues.csv")
    truth = dict(map(tuple, planted["faults"]["label_errors"]))
    listed = set(issues.path)
    assert len(listed & set(truth)) >= 5, issues  # of 6 planted
    assert len(listed - set(truth)) <= 2, issues
    planted_rows = issues[issues.path.isin(truth)]
    assert (planted_rows.suggested == planted_rows.path.map(truth)).all()
    assert (planted_rows.given == planted_rows.path.str.split("/").str[0]).all()
    assert issues.given_probability.is_monotonic_increasing  # most likely error first
    assert (issues.given_probability < 0.5).all() and (issues.suggested_probability > issues.given_probability).all()
    counts = planted["counts"]
    assert counts["label_issues"]["images"] == len(issues)
    assert (
        counts["label_issues"]["checked_images"] == counts["images"] and counts["label_issues"]["checked_classes"] == 5
    )
    per_class = {name: entry["label_issues"] for name, entry in counts["per_class"].items()}
    assert per_class == {k: v for k, v in issues.given.value_counts().items() if v}


def test_outputs_summary_and_pictures(planted):
    out = planted["root"] / "audit"
    assert {path.name for path in out.iterdir()} == OUTPUTS
    rounded = json.loads(json.dumps(planted["counts"]), parse_float=lambda text: round(float(text), 6))
    assert json.loads((out / "summary.json").read_text()) == rounded
    for name in ("duplicates.png", "label_issues.png"):
        with Image.open(out / name) as picture:
            assert picture.format == "PNG" and min(picture.size) >= 400


def test_the_csvs_are_bounded_by_max_rows_and_the_summary_counts_every_row(planted, tmp_path):
    config = CONFIG.model_copy(update={"max_rows": 2})
    counts = audit(planted["features"], planted["split"], planted["images"], tmp_path / "audit", config)
    assert counts == planted["counts"]
    assert len(pd.read_csv(tmp_path / "audit" / "duplicates.csv")) == 2 < counts["duplicates"]["pairs"]
    assert len(pd.read_csv(tmp_path / "audit" / "label_issues.csv")) == 2 < counts["label_issues"]["images"]


def test_a_rerun_writes_the_same_bytes(planted, tmp_path):
    audit(planted["features"], planted["split"], planted["images"], tmp_path / "audit", CONFIG)
    for name in OUTPUTS:  # same platform, same inputs: same bytes, as every stage (docs/reproducibility.md)
        assert (tmp_path / "audit" / name).read_bytes() == (planted["root"] / "audit" / name).read_bytes(), name


def clusters(rng, n_classes: int = 4, per_class: int = 40, width: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Separable Gaussian classes of non-negative features, like pooled ReLU activations."""
    centres = rng.normal(0, 1, (n_classes, width))
    labels = np.repeat(np.arange(n_classes), per_class)
    return np.maximum(centres[labels] + rng.normal(0, 0.6, (len(labels), width)), 0).astype(np.float32), labels


def test_the_duplicate_threshold_is_relative_to_the_data():
    rng = np.random.default_rng(0)
    features, _ = clusters(rng)
    originals = [3, 50, 90, 150]
    copies = features[originals] + rng.normal(0, 0.02, (len(originals), features.shape[1])).astype(np.float32)
    features = np.concatenate([features, copies])
    planted = {frozenset((i, 160 + n)) for n, i in enumerate(originals)}
    found = near_duplicates(features, 0.5)
    assert {frozenset(pair) for pair in zip(found.first, found.second, strict=True)} == planted
    assert np.all(np.diff(found.distance) >= 0) and found.threshold == pytest.approx(0.5 * found.median_nearest)
    # A common offset makes every raw cosine similarity above 0.999 (as a random-init backbone does), a scale
    # changes every distance: the pairs found stay the same.
    offset = (features + 100) / np.linalg.norm(features + 100, axis=1, keepdims=True)
    assert (offset @ offset.T).min() > 0.999
    for changed in (features + 100, features * 1000):
        again = near_duplicates(changed, 0.5)
        assert {frozenset(pair) for pair in zip(again.first, again.second, strict=True)} == planted
    assert len(near_duplicates(features, 1.0).first) > len(planted)  # the ratio sets where "near" ends


def test_a_group_larger_than_the_neighbours_searched_is_counted_as_crowded():
    rng = np.random.default_rng(1)
    features, _ = clusters(rng)
    group = features[0] + rng.normal(0, 0.001, (NEIGHBOURS + 3, features.shape[1])).astype(np.float32)
    found = near_duplicates(np.concatenate([features, group]), 0.5)
    assert found.crowded >= NEIGHBOURS + 1  # each of them has NEIGHBOURS near-identical others at least
    assert len(found.first) >= (NEIGHBOURS + 1) * NEIGHBOURS // 2


def test_label_errors_are_found_and_small_classes_left_unchecked():
    rng = np.random.default_rng(2)
    features, labels = clusters(rng, n_classes=5)
    flipped = np.array([5, 45, 85, 125, 165])
    given = labels.copy()
    given[flipped] = (labels[flipped] + 1) % 4
    keep = np.r_[np.arange(160), 160, 161, 162]  # class 4 keeps 3 images: fewer than the 5 folds
    issues = find_label_issues(features[keep], given[keep], 5, c=1.0, folds=5, seed=0)
    assert issues.unchecked_classes == [4] and issues.checked_classes == 4 and issues.checked_images == 160
    assert set(issues.images) == set(flipped[:4])  # the flip out of class 4 is not among the checked images
    assert list(issues.suggested) == list(labels[issues.images])
    assert np.all(np.diff(issues.given_probability) >= 0)


def test_the_suggestion_is_never_the_given_class():
    probabilities = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.7, 0.2]])
    suggested, probability = most_probable_other(probabilities, np.array([0, 2, 0]))
    assert suggested.tolist() == [1, 0, 1] and probability.tolist() == [0.3, 0.2, 0.7]  # ties: the first class


def test_pairs_across_the_split_come_first_then_the_closest():
    images = Images(
        features=np.zeros((4, 2), np.float32),
        labels=np.array([0, 0, 1, 1]),
        classes=["cat", "dog"],
        paths=["cat/a.jpg", "cat/b.jpg", "dog/c.jpg", "dog/d.jpg"],
        parts=np.array(["train", "train", "val", "test"]),
    )
    # Closest first, as near_duplicates returns them: a train pair, then two pairs across the split.
    pairs = Duplicates(np.array([0, 2, 1]), np.array([1, 3, 2]), np.array([0.1, 0.2, 0.3]), 1.0, 0.5, 0)
    table = duplicate_table(images, pairs)
    assert table[["path_a", "path_b"]].values.tolist() == [
        ["dog/c.jpg", "dog/d.jpg"],  # val-test
        ["cat/b.jpg", "dog/c.jpg"],  # train-val
        ["cat/a.jpg", "cat/b.jpg"],  # within train, although the closest
    ]
    assert table.distance_ratio.tolist() == [0.2, 0.3, 0.1] and table.class_b.tolist() == ["dog", "dog", "cat"]


def test_the_stage_imports_no_deep_learning_framework():
    from tests.test_dvc_yaml import executed_files, imported_modules

    imported = {name.split(".")[0] for path in executed_files("stages.audit") for name in imported_modules(path)}
    assert {"sklearn", "cleanlab"} <= imported and not imported & {"keras", "tensorflow", "jax", "torch"}


def test_missing_or_mismatched_features_name_the_file_and_the_fix(planted, tmp_path):
    import shutil

    features = shutil.copytree(planted["features"], tmp_path / "features")
    (features / "val" / "labels.npy").unlink()
    with pytest.raises(StageError, match=r"val/labels\.npy not found; run `dvc repro features`"):
        audit(features, planted["split"], planted["images"], tmp_path / "audit", CONFIG)
    (features / "test" / "features.npy").unlink()
    with pytest.raises(StageError, match=r"test/features\.npy not found; run `dvc repro features` first"):
        audit(features, planted["split"], planted["images"], tmp_path / "audit", CONFIG)
    split = shutil.copytree(planted["split"], tmp_path / "split")
    (split / "train.csv").write_text("path,label\n", encoding="utf-8")
    with pytest.raises(StageError, match=r"train\.csv lists 0 images, .*features\.npy has \d+ rows; rerun"):
        audit(planted["features"], split, planted["images"], tmp_path / "audit", CONFIG)
    assert not (tmp_path / "audit").exists()


def test_bad_audit_params_are_refused_before_any_work(tmp_path, monkeypatch):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["audit"].update(duplicate_ratio=1.5, folds=1, max_rows=0)
    raw["audit"]["neighbors"] = 5
    with pytest.raises(StageError) as caught:
        params.validate(raw)
    message = str(caught.value)
    for expected in (
        "audit.duplicate_ratio must be a number in (0, 1], got 1.5",
        "audit.folds must be an integer >= 2",
    ):
        assert expected in message
    assert "audit.max_rows must be an integer >= 1" in message and "unknown key audit.neighbors" in message
    # The stage loads params.yaml before it reads anything: no features are needed to be refused.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(StageError, match=r"audit\.duplicate_ratio"):
        main(tmp_path / "features", tmp_path / "split", tmp_path / "images", tmp_path / "audit")
    assert os.listdir(tmp_path) == ["params.yaml"]


def test_the_memory_check_refuses_before_reading_and_names_what_still_runs(planted, tmp_path, monkeypatch):
    need = memory.estimate(8677, 2048)
    assert 500 * 2**20 < need < 2 * 2**30  # Caltech-101's shape fits a small machine (benchmarks/audit.py measures)
    with pytest.raises(StageError, match=r"dvc repro evaluate") as caught:
        memory.check_fits(8677, 2048, offer=(need - 1, "MemAvailable in /proc/meminfo"))
    assert "8,677 images x 2,048 features" in str(caught.value)
    memory.check_fits(8677, 2048, offer=(need, "MemAvailable in /proc/meminfo"))
    monkeypatch.setattr(memory, "available_memory", lambda: (1, "the memory limit of cgroup /test (0.0 GiB)"))
    with pytest.raises(StageError, match=r"cgroup /test"):
        audit(planted["features"], planted["split"], planted["images"], tmp_path / "audit", CONFIG)
    assert not (tmp_path / "audit").exists()
