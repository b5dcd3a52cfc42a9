"""The evaluate stage: the metric definitions and the files it writes."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stages.evaluate import evaluate, score
from stages.train import train
from tests.helpers import SMALL_TRAIN
from transfer.errors import StageError
from transfer.params import TrainParams

METRIC_KEYS = {"accuracy", "loss", "top5_accuracy", "balanced_accuracy", "macro_f1", "n_test"}


def test_score_by_hand():
    # 3 of class 0 (2 right), 1 of class 1 (right); class 2 never predicted or present.
    labels = np.array([0, 0, 0, 1])
    probabilities = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.8, 0.1]])
    result = score(labels, probabilities)
    assert set(result) == METRIC_KEYS
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert result["loss"] == pytest.approx(-np.mean(np.log([0.7, 0.6, 0.2, 0.8])))
    assert result["top5_accuracy"] == 1.0
    assert result["n_test"] == 4


def test_top5_counts_the_label_among_the_five_most_likely():
    probabilities = np.tile(np.linspace(0.3, 0.01, 8), (2, 1))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    result = score(np.array([4, 5]), probabilities)  # ranks 5 and 6
    assert result["top5_accuracy"] == 0.5


@pytest.fixture(scope="module")
def evaluated(feature_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluated")
    train(feature_cache["features"], out / "head.keras", out / "live", TrainParams(**SMALL_TRAIN))
    evaluate(feature_cache["features"], feature_cache["split"], out / "head.keras", out / "metrics")
    return out / "metrics"


def test_writes_exactly_the_metric_keys(evaluated, feature_cache):
    text = (evaluated / "test.json").read_text()
    metrics = json.loads(text)
    assert set(metrics) == METRIC_KEYS
    assert metrics["n_test"] == len(pd.read_csv(feature_cache["split"] / "test.csv"))
    assert metrics["accuracy"] > 0.5  # 4 learnable classes: chance is 0.25
    assert text.endswith("}\n") and list(metrics) == sorted(metrics)


def test_per_class_table_predictions_and_confusion_png(evaluated, feature_cache):
    table = pd.read_csv(evaluated / "per_class.csv")
    assert list(table.columns) == ["class", "precision", "recall", "f1", "support"]
    assert list(table["class"]) == json.loads((feature_cache["features"] / "classes.json").read_text())
    predictions = pd.read_csv(evaluated / "predictions.csv")
    assert list(predictions.columns) == ["path", "actual", "predicted"]
    assert table["support"].sum() == len(predictions)
    accuracy = json.loads((evaluated / "test.json").read_text())["accuracy"]
    assert (predictions.actual == predictions.predicted).mean() == pytest.approx(accuracy, abs=1e-6)
    with Image.open(evaluated / "confusion_matrix.png") as png:
        assert png.format == "PNG" and min(png.size) >= 400


def test_missing_model_names_the_stage_to_run(feature_cache, tmp_path):
    with pytest.raises(StageError, match=r"run `dvc repro train`"):
        evaluate(feature_cache["features"], feature_cache["split"], tmp_path / "head.keras", tmp_path)
