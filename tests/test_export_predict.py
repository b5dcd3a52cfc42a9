"""The exported classifier and the predict command."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from stages.export import export
from stages.features import load_classes, load_part, read_manifests
from stages.params import FeaturesParams, TrainParams
from stages.predict import load_classifier, predict
from stages.train import train
from tests.conftest import ROOT, SMALL_FEATURES, SMALL_TRAIN, subprocess_env


@pytest.fixture(scope="module")
def exported(feature_cache, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    train(feature_cache["features"], models / "head.keras", models / "live", TrainParams(**SMALL_TRAIN))
    export(models / "head.keras", feature_cache["features"], models / "classifier.keras", FeaturesParams(**SMALL_FEATURES))
    return models


def run_predict(*args):
    return subprocess.run([sys.executable, "-m", "stages.predict", *map(str, args)], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)


def test_classifier_on_raw_images_agrees_with_the_cached_pipeline(exported, feature_cache):
    import keras

    head = keras.models.load_model(exported / "head.keras")
    manifest = read_manifests(feature_cache["split"])["test"]
    features, _ = load_part(feature_cache["features"], "test")
    model, classes = load_classifier(exported / "classifier.keras")
    assert classes == load_classes(feature_cache["features"])
    assert json.loads((exported / "classes.json").read_text()) == classes
    for row in range(3):
        image = tf.io.decode_image(tf.io.read_file(str(feature_cache["images"] / manifest["path"][row])), channels=3)
        assert image.shape[0] != 32  # raw size: the model resizes itself
        np.testing.assert_allclose(
            np.asarray(model(image[tf.newaxis]))[0], np.asarray(head(features[row : row + 1]))[0], atol=1e-4
        )


def test_predict_prints_top_k_per_image(exported, feature_cache):
    images = sorted((feature_cache["images"]).rglob("*.jpg"))[:2]
    model, classes = load_classifier(exported / "classifier.keras")
    expected = predict(model, classes, images, top=2)

    result = run_predict(*images, "--model", exported / "classifier.keras", "--top", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 * 3 and lines[0] == str(images[0]) and lines[3] == str(images[1])
    label, probability = lines[1].split("\t")
    assert (label, float(probability)) == (expected[str(images[0])][0][0], pytest.approx(expected[str(images[0])][0][1], abs=1e-4))

    as_json = run_predict(images[0], "--model", exported / "classifier.keras", "--json")
    parsed = json.loads(as_json.stdout)
    assert list(parsed) == [str(images[0])] and len(parsed[str(images[0])]) == min(5, len(classes))
    probabilities = [entry["probability"] for entry in parsed[str(images[0])]]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) == pytest.approx(1, abs=1e-3)


def test_predict_rejects_an_unreadable_image(exported, tmp_path):
    fake = tmp_path / "fake.jpg"
    fake.write_text("not an image")
    result = run_predict(fake, "--model", exported / "classifier.keras")
    assert result.returncode == 1
    assert f"{fake}: not a readable image" in result.stderr and "Traceback" not in result.stderr


def test_predict_without_a_model_says_to_run_dvc_repro(tmp_path):
    result = run_predict(tmp_path / "x.jpg", "--model", tmp_path / "missing.keras")
    assert result.returncode == 1
    assert "run `dvc repro`" in result.stderr and "Traceback" not in result.stderr
