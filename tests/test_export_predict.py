"""The exported classifier and the predict command."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.export import export
from stages.train import train
from tests.helpers import SMALL_FEATURES, SMALL_TRAIN
from tools.scratch_repo import ROOT, subprocess_env
from transfer.feature_cache import load_classes, load_part
from transfer.images import load_image
from transfer.manifests import read_manifests
from transfer.params import FeaturesParams, TrainParams
from transfer.predict import load_classifier, predict


@pytest.fixture(scope="module")
def exported(feature_cache, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    train(feature_cache["features"], models / "head.keras", models / "live", TrainParams(**SMALL_TRAIN))
    export(
        models / "head.keras", feature_cache["features"], models / "classifier.keras", FeaturesParams(**SMALL_FEATURES)
    )
    return models


def run_predict(*args):
    """The `predict` command setup.sh installs into the environment, as users run it."""
    command = [str(Path(sys.executable).with_name("predict")), *map(str, args)]
    return subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)


def test_classifier_on_raw_images_agrees_with_the_cached_pipeline(exported, feature_cache):
    import keras

    head = keras.models.load_model(exported / "head.keras")
    manifest = read_manifests(feature_cache["split"])["test"]
    features, _ = load_part(feature_cache["features"], "test")
    model, classes, image_size = load_classifier(exported / "classifier.keras")
    assert classes == load_classes(feature_cache["features"]) and image_size == 32
    assert json.loads((exported / "classes.json").read_text()) == classes
    paths = [feature_cache["images"] / manifest["path"][row] for row in range(3)]
    results, errors = predict(model, classes, image_size, paths, top=len(classes))
    assert errors == {}
    for row, path in enumerate(paths):
        expected = np.asarray(head(features[row : row + 1]))[0]
        got = dict(results[str(path)])
        np.testing.assert_allclose([got[c] for c in classes], expected, atol=1e-4)
        # Raw pixels of any size work too: the model resizes itself (bilinear, without antialiasing).
        raw = load_image(path)
        assert raw.shape[0] != 32
        assert np.asarray(model(raw[np.newaxis])).shape == (1, len(classes))


@pytest.mark.e2e
def test_predict_prints_top_k_per_image(exported, feature_cache, capsys):
    images = sorted((feature_cache["images"]).rglob("*.jpg"))[:2]
    model, classes, image_size = load_classifier(exported / "classifier.keras")
    expected, _ = predict(model, classes, image_size, images, top=2)

    result = run_predict(*images, "--model", exported / "classifier.keras", "--top", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 * 3 and lines[0] == str(images[0]) and lines[3] == str(images[1])
    label, probability = lines[1].split("\t")
    assert (label, float(probability)) == (
        expected[str(images[0])][0][0],
        pytest.approx(expected[str(images[0])][0][1], abs=1e-4),
    )

    # --json through the command's own main(), in this process (the CLI wrapper is exercised above).
    from transfer.predict import main

    main([images[0]], exported / "classifier.keras", top=5, as_json=True)
    parsed = json.loads(capsys.readouterr().out)
    assert list(parsed) == [str(images[0])]
    # The default top 5 (all 4 classes here), most likely first, with the probabilities the model gives.
    (expected_all,) = predict(model, classes, image_size, images[:1], top=len(classes))[0].values()
    assert len(classes) < 5 and len(expected_all) == len(classes)
    assert [entry["label"] for entry in parsed[str(images[0])]] == [label for label, _ in expected_all]
    np.testing.assert_allclose(
        [entry["probability"] for entry in parsed[str(images[0])]], [p for _, p in expected_all], atol=1e-4
    )


@pytest.mark.e2e
def test_predict_classifies_a_folder_and_names_each_bad_path(exported, feature_cache, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(feature_cache["images"] / sorted(p.name for p in feature_cache["images"].iterdir())[0], folder)
    good = sorted(folder.glob("*.jpg"))
    (folder / "notes.txt").write_text("skipped: not an image suffix")
    fake, missing = tmp_path / "fake.jpg", tmp_path / "missing.jpg"
    fake.write_text("not an image")

    result = run_predict(folder, fake, missing, "--model", exported / "classifier.keras", "--top", "1")
    assert result.returncode == 1
    printed = [line for line in result.stdout.splitlines() if not line.count("\t")]
    assert printed == [str(path) for path in good]  # every good image, in order, even though others failed
    assert result.stderr.splitlines() == [
        f"error: {fake}: not an image file (unrecognised content)",
        f"error: {missing}: no such file",
    ]


def test_predict_on_every_image_format_matches_pillow_pixels(exported, tmp_path):
    from tests.test_images import pillow_pixels
    from tools.image_corpus import make_corpus

    samples = make_corpus(tmp_path / "corpus")
    model, classes, image_size = load_classifier(exported / "classifier.keras")
    paths = [tmp_path / "corpus" / sample.name for sample in samples]
    results, errors = predict(model, classes, image_size, paths, top=len(classes))
    assert errors == {} and len(results) == len(paths)
    expected = np.asarray(model.predict_on_batch(np.stack([pillow_pixels(p, image_size) for p in paths])))
    for path, row in zip(paths, expected, strict=True):
        got = dict(results[str(path)])
        np.testing.assert_allclose([got[c] for c in classes], row, atol=1e-5, err_msg=path.name)


@pytest.mark.e2e
def test_predict_runs_from_any_directory_without_start_up_noise(exported, feature_cache, tmp_path):
    # A copy of the project whose models/ holds the classifier: the default --model is found from anywhere.
    project = tmp_path / "project"
    shutil.copytree(ROOT / "transfer", project / "transfer", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(exported, project / "models")
    image = sorted(feature_cache["images"].rglob("*.jpg"))[0]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "transfer.predict", str(image)],
        cwd=elsewhere,
        env={**subprocess_env(), "PYTHONPATH": str(project)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == str(image) and len(result.stdout.splitlines()) == 1 + len(
        json.loads((exported / "classes.json").read_text())
    )
    assert result.stderr == ""  # no CUDA probing, oneDNN or absl lines on a machine without a GPU


@pytest.mark.e2e
def test_predict_without_a_model_says_to_run_dvc_repro(tmp_path):
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    result = run_predict(image, "--model", tmp_path / "missing.keras")
    assert result.returncode == 1
    assert "missing.keras not found; run `dvc repro`" in result.stderr and "Traceback" not in result.stderr
