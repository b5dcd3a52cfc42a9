"""The train stage: the tutorial's head, determinism, DVCLive logs, and the logistic head."""

import json
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest

from stages.train import train
from synthetic.repos import small_params, write_params
from tests.helpers import SMALL_TRAIN, stage_command
from transfer.core.errors import StageError
from transfer.core.params import TrainParams
from transfer.head.training import fit_logistic


def run_train(feature_cache, out, **overrides):
    config = TrainParams(**{**SMALL_TRAIN, **overrides})
    train(feature_cache["features"], out / "head.keras", out / "live", config)
    return keras.models.load_model(out / "head.keras")


@pytest.mark.e2e  # TensorFlow training or a Keras subprocess: not the fast tier
def test_training_is_deterministic_and_logged(feature_cache, tmp_path):
    first = run_train(feature_cache, tmp_path / "a")
    second = run_train(feature_cache, tmp_path / "b")
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    live = tmp_path / "a" / "live"
    summary = json.loads((live / "metrics.json").read_text())
    assert summary["step"] == SMALL_TRAIN["epochs"] - 1
    assert set(summary["train"]) == set(summary["eval"]) == {"loss", "accuracy"}
    for split in ("train", "eval"):
        for metric in ("loss", "accuracy"):
            rows = (live / "plots" / "metrics" / split / f"{metric}.tsv").read_text().splitlines()
            assert rows[0] == f"step\t{metric}" and len(rows) == 1 + SMALL_TRAIN["epochs"]
    assert (live / "metrics.json").read_text() == (tmp_path / "b" / "live" / "metrics.json").read_text()


@pytest.mark.e2e  # TensorFlow training or a Keras subprocess: not the fast tier
def test_a_different_seed_gives_a_different_head(feature_cache, tmp_path):
    first = run_train(feature_cache, tmp_path / "a", epochs=1)
    second = run_train(feature_cache, tmp_path / "b", epochs=1, seed=8)
    assert not np.array_equal(first.get_weights()[-2], second.get_weights()[-2])


class FakeLive:
    def __init__(self):
        self.logged = {}

    def log_metric(self, name, value):
        self.logged[name] = value

    def next_step(self):
        pass


@pytest.mark.parametrize("n_classes", [2, 4])
def test_logistic_head_as_keras_matches_scikit_learn(n_classes):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(n_classes), 20)
    x = (rng.normal(0, 1, (len(y), 16)) + y[:, None] * 0.7).astype(np.float32) * 5 + 3
    config = TrainParams(**{**SMALL_TRAIN, "head": "logistic", "logistic_c": 0.5})
    live = FakeLive()
    model = fit_logistic((x, y), (x, y), n_classes, config, live)

    scaler = StandardScaler().fit(x)
    reference = LogisticRegression(C=0.5, max_iter=2000, random_state=config.seed).fit(scaler.transform(x), y)
    expected = reference.predict_proba(scaler.transform(x))
    np.testing.assert_allclose(np.asarray(model.predict(x, verbose=0)), expected, atol=1e-4)
    assert set(live.logged) == {"train/loss", "train/accuracy", "eval/loss", "eval/accuracy"}


def test_logistic_head_saves_a_loadable_model(feature_cache, tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    model = run_train(feature_cache, tmp_path, head="logistic")  # saved by the stage, loaded back from the file
    train_x, train_y = (np.load(feature_cache["features"] / "train" / f"{name}.npy") for name in ("features", "labels"))
    test_x = np.load(feature_cache["features"] / "test" / "features.npy")
    # The loaded file must be the fitted classifier, scaling included, on images it was not fitted on.
    scaler = StandardScaler().fit(train_x)
    reference = LogisticRegression(C=SMALL_TRAIN["logistic_c"], max_iter=2000, random_state=SMALL_TRAIN["seed"])
    expected = reference.fit(scaler.transform(train_x), train_y).predict_proba(scaler.transform(test_x))
    np.testing.assert_allclose(np.asarray(model.predict(test_x, verbose=0)), expected, atol=1e-4)


@pytest.mark.e2e  # TensorFlow training or a Keras subprocess: not the fast tier
def test_training_interrupted_after_an_epoch_leaves_no_metrics_files(feature_cache, tmp_path, monkeypatch):
    from dvclive import Live

    steps = []
    original = Live.next_step

    def interrupt_after_the_first_epoch(live):
        original(live)  # epoch 1's metrics and plots are written (into the temporary folder)...
        steps.append(live.step)
        assert (Path(live.dir) / "metrics.json").is_file()
        raise KeyboardInterrupt  # ...then Ctrl-C

    monkeypatch.setattr(Live, "next_step", interrupt_after_the_first_epoch)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        run_train(feature_cache, out)
    assert steps == [1]
    assert sorted(p.name for p in out.iterdir()) == []  # no live/ folder, no head.keras, no temporaries


@pytest.mark.e2e  # TensorFlow training or a Keras subprocess: not the fast tier
def test_a_rerun_replaces_the_previous_metrics_whole(feature_cache, tmp_path):
    out = tmp_path / "out"
    run_train(feature_cache, out, epochs=3)
    (out / "live" / "stale.txt").write_text("from an older run")
    run_train(feature_cache, out, epochs=2)
    assert json.loads((out / "live" / "metrics.json").read_text())["step"] == 1
    assert not (out / "live" / "stale.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == ["head.keras", "live"]


@pytest.mark.e2e  # TensorFlow training or a Keras subprocess: not the fast tier
def test_the_saved_dense_head_holds_the_trained_weights_and_no_optimizer_state(feature_cache, tmp_path):
    import io
    import zipfile

    import h5py

    model = run_train(feature_cache, tmp_path, epochs=2)
    with zipfile.ZipFile(tmp_path / "head.keras") as archive:
        weights = io.BytesIO(archive.read("model.weights.h5"))
    with h5py.File(weights, "r") as h5:
        assert "optimizer" not in h5  # Adam's moments: not needed to predict, twice the weights' size
    features = np.load(feature_cache["features"] / "test" / "features.npy")
    assert np.asarray(model.predict(features, verbose=0)).shape == (len(features), 4)


@pytest.mark.e2e  # TensorFlow training or a Keras subprocess: not the fast tier
def test_keras_loads_without_the_optional_modules_it_would_pull_in_and_they_stay_importable():
    import subprocess
    import sys

    from synthetic.repos import ROOT, subprocess_env

    code = (
        "import sys; from transfer.core import devices; devices.use('tensorflow')\n"
        "print(sorted(m for m in ('sklearn', 'jax', 'matplotlib', 'pandas') if m in sys.modules))\n"
        "import sklearn.linear_model, pandas, matplotlib.figure; print('importable')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-2:] == ["[]", "importable"]


@pytest.mark.e2e  # TensorFlow training or a Keras subprocess: not the fast tier
def test_a_head_too_big_for_the_memory_is_refused_naming_a_width_that_fits(feature_cache, tmp_path, monkeypatch):
    """hidden_units in the millions was an out-of-memory traceback from TensorFlow; now a message, before Keras."""
    from transfer.head import memory

    monkeypatch.setattr(memory, "available_memory", lambda: (2 * memory.GIB, "a test's budget"))
    with pytest.raises(StageError) as caught:
        run_train(feature_cache, tmp_path, hidden_units=1_000_000)
    message = str(caught.value)
    assert "train.hidden_units 1000000" in message and "2.0 GiB is available (a test's budget" in message
    width = int(message.split("train.hidden_units to ")[1].split()[0])
    n_features = np.load(feature_cache["features"] / "train" / "features.npy").shape[1]
    assert 0 < width < 1_000_000 and memory.estimate(n_features, 4, width, 16) <= 2 * memory.GIB
    assert not (tmp_path / "head.keras").exists()
    run_train(feature_cache, tmp_path / "fits", hidden_units=width // 100)  # a width the message allows trains


@pytest.mark.e2e
def test_a_train_run_writes_nothing_of_tensorflow_to_stderr(feature_cache, tmp_path):
    """No absl lines while TensorFlow loads, and no "E0000 ... NodeDef mentions attribute use_unbounded_threadpool"
    from Keras' tf.data input while the head trains (shown at level 2 before the stage set its own). At the level a
    shell sets to quiet TensorFlow, 2; unset, the reproduced run's log (test_pipeline) shows none of it either."""
    write_params(tmp_path, small_params("file:///archive.zip", None, **{"train.epochs": 2}))
    command, env = stage_command("train", feature_cache["features"], tmp_path / "head.keras", tmp_path / "live")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
