"""The features stage: shapes, label order, streaming output, and agreement with the model itself."""

import json

import numpy as np
import pandas as pd
import pytest

from stages.features import extract_features
from tests.helpers import SMALL_FEATURES
from transfer.core.errors import StageError
from transfer.core.images import load_image
from transfer.core.manifests import read_manifests
from transfer.core.params import FeaturesParams
from transfer.features import backbones
from transfer.features.cache import load_classes, load_part


def test_arrays_have_one_float32_row_per_manifest_line(feature_cache):
    manifests = read_manifests(feature_cache["split"])
    classes = load_classes(feature_cache["features"])
    assert classes == sorted(manifests["train"]["label"].unique())
    for part, manifest in manifests.items():
        features, labels = load_part(feature_cache["features"], part)
        assert features.dtype == np.float32 and labels.dtype == np.int32
        assert features.shape == (len(manifest), 2048)
        assert [classes[i] for i in labels] == list(manifest["label"])
        assert np.isfinite(features).all()


def test_each_row_is_the_backbone_applied_to_that_image(feature_cache):
    manifest = read_manifests(feature_cache["split"])["test"]
    features, _ = load_part(feature_cache["features"], "test")
    model = backbones.build_extractor("resnet50", None, 32)
    for row in (0, len(manifest) - 1):
        image = load_image(feature_cache["images"] / manifest["path"][row], 32)
        expected = np.asarray(model(image[np.newaxis]))[0]
        np.testing.assert_allclose(features[row], expected, rtol=1e-4, atol=1e-4)


def test_batch_size_does_not_change_the_features(feature_cache, tmp_path):
    config = FeaturesParams(**{**SMALL_FEATURES, "batch_size": 5})
    extract_features(feature_cache["images"], feature_cache["split"], tmp_path / "features", config)
    for part in ("train", "val", "test"):
        np.testing.assert_allclose(
            load_part(tmp_path / "features", part)[0], load_part(feature_cache["features"], part)[0], atol=1e-4
        )


def test_writes_only_the_final_folder(feature_cache):
    siblings = sorted(p.name for p in feature_cache["features"].parent.iterdir())
    assert siblings == ["features", "images", "split"]
    written = sorted(p.relative_to(feature_cache["features"]).as_posix() for p in feature_cache["features"].rglob("*"))
    parts = [f"{part}/{name}" for part in ("test", "train", "val") for name in ("features.npy", "labels.npy")]
    assert written == sorted(["classes.json", "test", "train", "val", *parts])  # no temporary left inside either
    # classes.json names the class folders in label-index order: what export and predict label outputs with.
    class_folders = sorted(p.name for p in feature_cache["images"].iterdir() if p.is_dir())
    assert json.loads((feature_cache["features"] / "classes.json").read_text(encoding="utf-8")) == class_folders


def test_missing_manifests_name_the_stage_to_run(tmp_path):
    with pytest.raises(StageError, match=r"train.csv not found; run `dvc repro split`"):
        extract_features(tmp_path, tmp_path, tmp_path / "features", FeaturesParams(**SMALL_FEATURES))


def test_labels_absent_from_train_are_an_error(feature_cache, tmp_path):
    split = tmp_path / "split"
    split.mkdir()
    for part in ("train", "val", "test"):
        frame = pd.read_csv(feature_cache["split"] / f"{part}.csv")
        if part == "test":
            frame.loc[0, "label"] = "unicorn"
        frame.to_csv(split / f"{part}.csv", index=False)
    with pytest.raises(StageError, match="unicorn"):
        extract_features(feature_cache["images"], split, tmp_path / "features", FeaturesParams(**SMALL_FEATURES))
    assert not (tmp_path / "features").exists()
