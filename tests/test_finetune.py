"""Fine-tuning (stages/finetune.py) at 32 px: the warm start, what trains and what stays frozen, determinism and
resuming. On the suite's resnet50 at 32 px (random init): the smaller mobilenetv3large and efficientnetv2b0, random
init at 32 px, give features so alike that no head learns on them (accuracy at chance, measured), and a test of what
training keeps needs a model that improves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stages.evaluate import evaluate
from stages.finetune import finetune
from stages.train import train
from synthetic.repos import md5_of
from tests.helpers import SMALL_FEATURES, SMALL_TRAIN, assert_plain_keras_agrees
from transfer.core.params import FeaturesParams, FinetuneParams, TrainParams
from transfer.finetune import loop

FEATURES = FeaturesParams(**SMALL_FEATURES)
FINETUNE = dict(epochs=2, learning_rate=0.0003, unfreeze=1, batch_size=8, patience=5, seed=5)


@pytest.fixture(scope="module")
def prepared(feature_cache, tmp_path_factory) -> dict[str, Path]:
    """The session's images, split and cached features, and a head trained on them and evaluated."""
    root = tmp_path_factory.mktemp("finetune")
    paths = {**feature_cache, "head": root / "head.keras"}
    train(paths["features"], paths["head"], root / "live", TrainParams(**{**SMALL_TRAIN, "epochs": 10}))
    evaluate(paths["features"], paths["split"], paths["images"], paths["head"], root / "head_metrics")
    return paths


def run(prepared, out: Path, **overrides) -> dict:
    config = FinetuneParams(**{**FINETUNE, **overrides})
    args = [prepared[name] for name in ("images", "split", "features", "head")]
    return finetune(*args, out / "finetuned.keras", out / "metrics", FEATURES, config)


@pytest.fixture(scope="module")
def zero(prepared, tmp_path_factory) -> tuple[Path, dict]:
    """A run with finetune.epochs 0: its folder and results."""
    out = tmp_path_factory.mktemp("zero")
    return out, run(prepared, out, epochs=0)


@pytest.fixture(scope="module")
def finetuned(prepared, tmp_path_factory) -> Path:
    """A run of FINETUNE's two epochs: its folder."""
    out = tmp_path_factory.mktemp("finetuned")
    run(prepared, out)
    return out


def test_zero_epochs_gives_the_heads_test_predictions(prepared, zero):
    out, results = zero
    head = prepared["head"].parent / "head_metrics"
    for name in ("predictions.csv", "per_class.csv"):
        assert (out / "metrics" / name).read_text() == (head / name).read_text(), name
    expected = json.loads((head / "test.json").read_text())
    assert set(results) == set(expected)
    assert results == pytest.approx(expected, abs=1e-6)
    assert not (out / ".finetuned.keras.tmp-resume").exists()


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


def test_reruns_give_the_same_bytes_and_resuming_gives_what_an_uninterrupted_run_gives(
    prepared, zero, finetuned, tmp_path, monkeypatch
):
    outputs = ["finetuned.keras", "metrics/test.json", "metrics/per_class.csv", "metrics/predictions.csv"]
    assert md5_of(finetuned / "finetuned.keras") != md5_of(zero[0] / "finetuned.keras")  # it kept a trained epoch
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
    assert (tmp_path / ".finetuned.keras.tmp-resume/state.npz").is_file()
    assert not (tmp_path / "finetuned.keras").exists()
    epochs_trained = []
    monkeypatch.setattr(loop, "_train_epoch", lambda *args: epochs_trained.append(args[4]) or train_epoch(*args))
    run(prepared, tmp_path)
    assert epochs_trained == [1]
    assert [md5_of(finetuned / name) for name in outputs] == [md5_of(tmp_path / name) for name in outputs]
    assert not (tmp_path / ".finetuned.keras.tmp-resume").exists()


def test_the_finetuned_model_is_a_classifier_with_its_class_names(prepared, finetuned):
    from transfer.artifacts.predict import load_classifier

    model, classes, image_size = load_classifier(finetuned / "finetuned.keras")
    assert classes == json.loads((prepared["features"] / "classes.json").read_text()) and image_size == 32


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_plain_keras_loads_the_finetuned_model_without_the_project(finetuned, tmp_path, backend):
    images = np.random.default_rng(1).integers(0, 256, (2, 45, 33, 3)).astype(np.uint8)
    assert_plain_keras_agrees(finetuned / "finetuned.keras", images, backend, tmp_path)


def test_augmentation_is_a_seeded_crop_and_flip(prepared):
    from transfer.core.images import load_image

    path = sorted(prepared["images"].rglob("*.jpg"))[0]
    plain = load_image(path, 32)
    first, again = load_image(path, 32, augment=11), load_image(path, 32, augment=11)
    assert np.array_equal(first, again) and first.shape == plain.shape
    variants = {load_image(path, 32, augment=seed).tobytes() for seed in range(8)}
    assert len(variants - {plain.tobytes()}) >= 7  # (a near-whole crop, unflipped, may equal the plain image)
