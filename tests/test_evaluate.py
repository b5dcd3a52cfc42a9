"""The evaluate stage: the metric definitions and the files it writes."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stages.evaluate import evaluate
from stages.train import train
from tests.helpers import SMALL_TRAIN
from transfer.core.errors import StageError
from transfer.core.params import TrainParams
from transfer.evaluation.pictures import top_losses
from transfer.evaluation.scores import score

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


def test_top_losses_are_the_images_with_the_highest_loss_first():
    labels = np.array([0, 1, 2, 0, 1])
    # True-class probabilities 0.9, 0.1, 0.5, 0.1, 0.02: losses rank 4, then 1 and 3 (a tie, by index), then 2.
    probabilities = np.array(
        [[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.25, 0.25, 0.5], [0.1, 0.3, 0.6], [0.49, 0.02, 0.49]]
    )
    assert top_losses(labels, probabilities).tolist() == [4, 1, 3, 2, 0]
    assert top_losses(labels, probabilities, count=2).tolist() == [4, 1]


def inputs(cache: dict) -> tuple[Path, Path, Path]:
    """evaluate's first arguments from a feature cache: the features, the split and the images."""
    return cache["features"], cache["split"], cache["images"]


LOGISTIC = TrainParams(**{**SMALL_TRAIN, "head": "logistic"})  # scikit-learn: no TensorFlow training
# The dense head trains with TensorFlow: its cases belong to the slow tier.
HEADS = [pytest.param("dense", marks=pytest.mark.e2e), "logistic"]


@pytest.fixture(scope="module")
def evaluated(feature_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluated")
    train(feature_cache["features"], out / "head.keras", out / "live", LOGISTIC)
    evaluate(*inputs(feature_cache), out / "head.keras", out / "metrics")
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
    with Image.open(evaluated / "top_losses.png") as png:  # 12 test images, 4 to a row
        assert png.format == "PNG" and png.size[0] >= 800 and png.size[1] >= 600


def test_missing_model_names_the_stage_to_run(feature_cache, tmp_path):
    with pytest.raises(StageError, match=r"run `dvc repro train`"):
        evaluate(*inputs(feature_cache), tmp_path / "head.keras", tmp_path)


GOLDEN = json.loads((Path(__file__).with_name("head_golden.json")).read_text(encoding="utf-8"))


@pytest.mark.parametrize("head", HEADS)
def test_train_and_evaluate_give_the_metrics_of_the_stages_as_they_were(tmp_path, head):
    """head_golden.json holds what train + evaluate gave on a fixed NumPy-made feature cache before evaluate ran on
    NumPy instead of Keras and scikit-learn (tests/head_golden.py says how it was made)."""
    from tests.head_golden import run_heads

    got, expected = run_heads(tmp_path, heads=(head,))[head], GOLDEN[head]
    assert set(got["test"]) == set(expected["test"]) == METRIC_KEYS
    for key, value in expected["test"].items():
        assert got["test"][key] == pytest.approx(value, abs=1e-6), key
    assert got["train"]["step"] == expected["train"]["step"]
    for split in ("train", "eval"):
        for key, value in expected["train"][split].items():
            assert got["train"][split][key] == pytest.approx(value, abs=1e-6), (split, key)
    assert got["md5"] == expected["md5"]  # per_class.csv and predictions.csv byte for byte


@pytest.mark.parametrize("head", HEADS)
def test_numpy_forward_pass_equals_keras_on_saved_heads(tmp_path_factory, head):
    import keras

    from tests.head_golden import write_feature_cache
    from transfer.evaluation.numpy_forward import predict

    root = tmp_path_factory.mktemp(f"forward_{head}")
    cache = write_feature_cache(root)
    config = TrainParams(**{**SMALL_TRAIN, "head": head, "epochs": 3})
    train(cache["features"], root / "head.keras", root / "live", config)
    features = np.load(cache["features"] / "test" / "features.npy")
    expected = np.asarray(keras.models.load_model(root / "head.keras").predict(features, verbose=0))
    np.testing.assert_allclose(predict(root / "head.keras", features), expected, atol=1e-6)


def test_a_head_with_an_unknown_layer_is_an_error_naming_the_file(tmp_path):
    import keras

    from transfer.evaluation.numpy_forward import predict

    model = keras.Sequential([keras.Input((4,)), keras.layers.LayerNormalization(), keras.layers.Dense(2)])
    model.save(tmp_path / "odd.keras")
    with pytest.raises(StageError, match=r"odd\.keras: layer LayerNormalization is not supported"):
        predict(tmp_path / "odd.keras", np.zeros((1, 4), np.float32))


def test_a_head_trained_on_other_features_is_an_error_naming_the_file(feature_cache, tmp_path):
    from tests.head_golden import write_feature_cache

    cache = write_feature_cache(tmp_path / "other")  # 48 features per image; the session's cache has 2048
    train(cache["features"], tmp_path / "head.keras", tmp_path / "live", LOGISTIC)
    with pytest.raises(StageError, match=r"head\.keras takes 48 features per image, the cached features have 2048"):
        evaluate(*inputs(feature_cache), tmp_path / "head.keras", tmp_path / "metrics")
    assert not (tmp_path / "metrics").exists()
