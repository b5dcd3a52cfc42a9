"""Fine-tuning (stages/finetune.py) and the export of what it kept, at 32 px: epochs 0 trains nothing and imports no
Keras; the warm start, what trains and what stays frozen, determinism and resuming; a run that never beats the warm
start delivers the head. On the suite's resnet50 at 32 px (random init): the smaller mobilenetv3large and
efficientnetv2b0, random init at 32 px, give features so alike that no head learns on them (accuracy at chance,
measured), and a test of what training keeps needs a model that improves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stages.evaluate import evaluate
from stages.export import export
from stages.finetune import finetune
from stages.train import train
from synthetic.repos import ROOT, md5_of, subprocess_env
from tests.helpers import SMALL_FEATURES, SMALL_TRAIN, assert_plain_keras_agrees
from transfer.core.params import FeaturesParams, FinetuneParams, TrainParams
from transfer.finetune import loop
from transfer.finetune.weights import SUMMARY, WEIGHTS

FEATURES = FeaturesParams(**SMALL_FEATURES)
FINETUNE = dict(epochs=2, learning_rate=0.0003, unfreeze=1, batch_size=8, patience=5, seed=5)
RESULTS = ["test.json", "per_class.csv", "predictions.csv", "confusion_matrix.png"]


def heads(feature_cache, root: Path, head: str, epochs: int) -> dict[str, Path]:
    """The session's images, split and cached features, a head trained on them and evaluate's results."""
    paths = {**feature_cache, "head": root / "head.keras", "head_metrics": root / "head_metrics"}
    train(
        paths["features"], paths["head"], root / "live", TrainParams(**{**SMALL_TRAIN, "head": head, "epochs": epochs})
    )
    evaluate(paths["features"], paths["split"], paths["images"], paths["head"], paths["head_metrics"])
    return paths


@pytest.fixture(scope="module")
def logistic(feature_cache, tmp_path_factory) -> dict[str, Path]:
    """A logistic head (scikit-learn: no TensorFlow training)."""
    return heads(feature_cache, tmp_path_factory.mktemp("logistic"), "logistic", 1)


@pytest.fixture(scope="module")
def prepared(feature_cache, tmp_path_factory) -> dict[str, Path]:
    """A dense head trained for 10 epochs: a warm start that fine-tuning can improve."""
    return heads(feature_cache, tmp_path_factory.mktemp("finetune"), "dense", 10)


def run(prepared, out: Path, **overrides) -> dict:
    config = FinetuneParams(**{**FINETUNE, **overrides})
    args = [prepared[name] for name in ("images", "split", "features", "head")]
    return finetune(*args, out / "finetuned", out / "metrics", FEATURES, config)


ZERO_EPOCHS = """
import sys
from pathlib import Path
from stages.finetune import finetune
from transfer.core.params import FeaturesParams, FinetuneParams
images, split, features, head, out = map(Path, sys.argv[1:6])
finetune(images, split, features, head, out / "finetuned", out / "metrics", FeaturesParams(**{features_params}),
         FinetuneParams(**{finetune_params}))
loaded = sorted(name for name in ("keras", "tensorflow", "jax", "torch") if name in sys.modules)
print("frameworks loaded:", loaded)
"""


def test_zero_epochs_imports_no_keras_and_gives_the_heads_results_and_model(logistic, tmp_path):
    script = ZERO_EPOCHS.format(features_params=SMALL_FEATURES, finetune_params={**FINETUNE, "epochs": 0})
    args = [str(logistic[name]) for name in ("images", "split", "features", "head")]
    result = subprocess.run(
        [sys.executable, "-c", script, *args, str(tmp_path)],
        cwd=ROOT,
        env={**subprocess_env(), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "frameworks loaded: []" in result.stdout
    assert "finetune.epochs is 0: the head on the frozen backbone" in result.stdout
    for name in RESULTS:  # evaluate's own bytes: git stores them once
        assert md5_of(tmp_path / "metrics" / name) == md5_of(logistic["head_metrics"] / name), name
    assert sorted(p.name for p in (tmp_path / "finetuned").iterdir()) == [SUMMARY]
    assert json.loads((tmp_path / "finetuned" / SUMMARY).read_text())["epochs_trained"] == 0
    curves = sorted((tmp_path / "metrics/train/plots/metrics").rglob("*.tsv"))
    assert [p.relative_to(tmp_path / "metrics/train/plots/metrics").as_posix() for p in curves] == [
        "eval/accuracy.tsv",
        "eval/loss.tsv",
        "train/accuracy.tsv",
        "train/loss.tsv",
    ]
    assert [p.read_text() for p in curves] == ["step\taccuracy\n", "step\tloss\n", "step\taccuracy\n", "step\tloss\n"]


@pytest.fixture(scope="module")
def head_classifier(logistic, tmp_path_factory) -> Path:
    """The classifier exported after a run of 0 epochs: the head on the frozen backbone."""
    out = tmp_path_factory.mktemp("head_classifier")
    run(logistic, out, epochs=0)
    export(logistic["head"], out / "finetuned", logistic["features"], out / "classifier.keras", FEATURES)
    return out / "classifier.keras"


def test_zero_epochs_exports_the_same_classifier_as_before_fine_tuning_existed(logistic, head_classifier):
    from transfer.artifacts.predict import load_classifier

    model, classes, size = load_classifier(head_classifier)
    assert model.name == "classifier" and size == 32
    assert classes == json.loads((logistic["features"] / "classes.json").read_text())


def test_a_run_that_never_beats_the_warm_start_delivers_the_head(logistic, tmp_path, monkeypatch):
    def no_better(model, decoder, data, config, checkpoint):
        return loop.History(epochs=[{"train": {"loss": 9.0, "accuracy": 0.1}, "eval": {"loss": 9.0, "accuracy": 0.1}}])

    monkeypatch.setattr(loop, "fit", no_better)
    results = run(logistic, tmp_path, epochs=1)
    assert not (tmp_path / "finetuned" / WEIGHTS).exists()
    assert json.loads((tmp_path / "finetuned" / SUMMARY).read_text())["best_epoch"] == 0
    for name in RESULTS:
        assert md5_of(tmp_path / "metrics" / name) == md5_of(logistic["head_metrics"] / name), name
    assert results == pytest.approx(json.loads((logistic["head_metrics"] / "test.json").read_text()), abs=1e-6)


@pytest.fixture(scope="module")
def finetuned(prepared, tmp_path_factory) -> Path:
    """A run of FINETUNE's two epochs, and its export: its folder."""
    out = tmp_path_factory.mktemp("finetuned")
    run(prepared, out)
    export(prepared["head"], out / "finetuned", prepared["features"], out / "classifier.keras", FEATURES)
    return out


@pytest.mark.e2e
def test_only_the_top_blocks_and_the_head_train_and_batchnorm_stays(prepared):
    import keras

    from transfer.features.decode_pool import ImageDecoder
    from transfer.finetune.data import manifests
    from transfer.finetune.model import backbone_of, blocks, build

    config = FinetuneParams(**{**FINETUNE, "unfreeze": 2})
    head = keras.saving.load_model(prepared["head"], compile=False)
    model, extractor, unfrozen = build(FEATURES, config, head)
    base = backbone_of(extractor)
    assert unfrozen == ["conv5_block2", "conv5_block3"]
    layers = [layer for layer in [*base.layers, *head.layers] if layer.weights]
    before = [[np.array(w) for w in layer.get_weights()] for layer in layers]
    data = manifests(
        prepared["images"], prepared["split"], json.loads((prepared["features"] / "classes.json").read_text())
    )
    with ImageDecoder(FEATURES.image_size, config.batch_size) as decoder:
        loop._train_epoch(model, decoder, data["train"], config, 0, 1)

    top = {layer.name for _, group in blocks(base)[-2:] for layer in group}
    for layer, old in zip(layers, before, strict=True):
        changed = not all(np.array_equal(a, b) for a, b in zip(old, layer.get_weights(), strict=True))
        batchnorm = isinstance(layer, keras.layers.BatchNormalization)  # gamma, beta and the moving statistics
        should = not batchnorm and (layer.name in top or any(layer is h for h in head.layers))
        assert changed == should, f"{layer.name} {'changed' if changed else 'did not change'}"


@pytest.mark.e2e
def test_a_padded_step_learns_what_the_unpadded_step_would():
    import keras

    from transfer.finetune.model import compile_for_training

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 4)).astype(np.float32), np.array([0, 2, 1])
    models = []
    for rows in (3, 5):  # the real rows, then the same rows padded to a batch of 5 with rows of weight 0
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        compile_for_training(model, 0.1)
        weights = loop.padded(np.ones(3, np.float32), rows)
        result = model.train_on_batch(
            loop.padded(x, rows), loop.padded(y, rows), sample_weight=weights, return_dict=True
        )
        models.append((result, [np.asarray(w) for w in model.get_weights()]))
    (plain, plain_weights), (padded, padded_weights) = models
    assert padded["loss"] == pytest.approx(plain["loss"], rel=1e-6) and padded["accuracy"] == plain["accuracy"]
    for a, b in zip(plain_weights, padded_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.e2e
def test_reruns_give_the_same_bytes_and_resuming_gives_what_an_uninterrupted_run_gives(
    prepared, finetuned, tmp_path, monkeypatch
):
    outputs = [f"finetuned/{WEIGHTS}", f"finetuned/{SUMMARY}", *(f"metrics/{name}" for name in RESULTS[:3])]
    assert json.loads((finetuned / f"finetuned/{SUMMARY}").read_text())["best_epoch"] >= 1  # it kept a trained epoch
    assert json.loads((finetuned / "metrics/train/metrics.json").read_text())["step"] == 1  # two epochs: 0, 1

    # A second run, interrupted in its second epoch: the checkpoint of the first stays, and the next run starts from
    # there. Its bytes equal to the uninterrupted run's show both determinism and resume equivalence.
    train_epoch = loop._train_epoch

    def interrupted(model, decoder, train, config, epoch, n_epochs):
        if epoch == 1:
            raise KeyboardInterrupt
        return train_epoch(model, decoder, train, config, epoch, n_epochs)

    monkeypatch.setattr(loop, "_train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(prepared, tmp_path)
    assert (tmp_path / ".finetuned.tmp-resume/state.npz").is_file()
    assert not (tmp_path / "finetuned").exists()
    epochs_trained = []
    monkeypatch.setattr(loop, "_train_epoch", lambda *args: epochs_trained.append(args[4]) or train_epoch(*args))
    run(prepared, tmp_path)
    assert epochs_trained == [1]
    assert [md5_of(finetuned / name) for name in outputs] == [md5_of(tmp_path / name) for name in outputs]
    assert not (tmp_path / ".finetuned.tmp-resume").exists()


@pytest.mark.e2e
def test_the_exported_finetuned_classifier_predicts_as_the_finetuned_model_scored(prepared, finetuned, capsys):
    import pandas as pd

    from transfer.artifacts.predict import load_classifier, main
    from transfer.core.images import load_image

    model, classes, image_size = load_classifier(finetuned / "classifier.keras")
    assert model.name == "finetuned_classifier" and image_size == 32
    assert classes == json.loads((prepared["features"] / "classes.json").read_text())
    scored = pd.read_csv(finetuned / "metrics/predictions.csv")
    images = np.stack([load_image(prepared["images"] / path, 32) for path in scored["path"]])
    predicted = np.asarray(model.predict_on_batch(images)).argmax(axis=1)
    assert [classes[i] for i in predicted] == scored["predicted"].tolist()

    main([prepared["images"] / scored["path"][0]], finetuned / "classifier.keras", top=1, as_json=False)
    kind = "fine-tuned: the top backbone blocks and the head"  # predict says which model it used
    assert capsys.readouterr().err == f"predict: {finetuned / 'classifier.keras'}: {kind}\n"


@pytest.mark.e2e
def test_plain_keras_on_jax_loads_the_finetuned_classifier_without_the_project(finetuned, tmp_path):
    # On TensorFlow: tests/test_export_predict.py, the head's classifier (the same layers).
    images = np.random.default_rng(1).integers(0, 256, (2, 45, 33, 3)).astype(np.uint8)
    assert_plain_keras_agrees([finetuned / "classifier.keras"], images, "jax", tmp_path)


def test_augmentation_is_a_seeded_crop_and_flip(feature_cache):
    from transfer.core.images import load_image

    path = sorted(feature_cache["images"].rglob("*.jpg"))[0]
    plain = load_image(path, 32)
    first, again = load_image(path, 32, augment=11), load_image(path, 32, augment=11)
    assert np.array_equal(first, again) and first.shape == plain.shape
    variants = {load_image(path, 32, augment=seed).tobytes() for seed in range(8)}
    assert len(variants - {plain.tobytes()}) >= 7  # (a near-whole crop, unflipped, may equal the plain image)
