"""The backbone registry, its preprocessing, and loading weights from a file."""

import importlib

import keras
import numpy as np
import pytest

from transfer.core import params
from transfer.features import backbones

# keras.applications module whose preprocess_input each backbone must reproduce.
KERAS_MODULES = {
    "resnet50": "resnet50",
    "resnet101": "resnet",
    "resnet50v2": "resnet_v2",
    "efficientnetv2b0": "efficientnet_v2",
    "mobilenetv3large": "mobilenet_v3",
    "convnexttiny": "convnext",
}


def test_registry_matches_the_params_choices():
    assert set(backbones.BACKBONES) == set(params.BACKBONES) == set(KERAS_MODULES)


@pytest.mark.parametrize("name", sorted(KERAS_MODULES))
def test_preprocessing_is_identical_to_keras_preprocess_input(name):
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    module = importlib.import_module(f"keras.applications.{KERAS_MODULES[name]}")
    expected = module.preprocess_input(pixels.copy())  # works in place on NumPy arrays
    np.testing.assert_allclose(preprocess(backbones.BACKBONES[name].preprocess, pixels), expected, rtol=0, atol=1e-4)


def preprocess(mode: str, pixels: np.ndarray) -> np.ndarray:
    for layer in backbones.preprocessing(mode):
        pixels = layer(pixels)
    return np.asarray(pixels)


def test_caffe_mode_is_bgr_minus_imagenet_mean_exactly():
    pixels = np.random.default_rng(1).integers(0, 256, (2, 4, 4, 3)).astype(np.float32)
    mean = np.asarray(backbones.CAFFE_MEAN_BGR, np.float32)
    np.testing.assert_array_equal(preprocess("caffe", pixels), pixels[..., ::-1] - mean)


def test_tf_mode_is_the_backbones_own_arithmetic_exactly():
    pixels = np.arange(256, dtype=np.float32).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    np.testing.assert_array_equal(preprocess("tf", pixels), pixels / np.float32(127.5) - np.float32(1))


@pytest.mark.parametrize("name", sorted(KERAS_MODULES))
def test_every_backbone_builds_and_pools_at_32px(name):
    model = backbones.build_extractor(name, None, 32)
    out = np.asarray(model(np.zeros((2, 32, 32, 3), np.float32)))
    assert out.ndim == 2 and out.shape[0] == 2 and out.shape[1] >= 512
    assert np.isfinite(out).all()


def test_weights_saved_to_a_file_load_through_the_weights_path(tmp_path):
    images = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    trained = backbones.build_extractor("resnet50", None, 32)
    base = next(layer for layer in trained.layers if isinstance(layer, keras.Model))
    rng = np.random.default_rng(2)  # weights unlike the seeded random init, so loading must happen
    base.set_weights([w + rng.normal(0, 0.01, w.shape).astype(w.dtype) for w in base.get_weights()])
    path = tmp_path / "backbone.weights.h5"
    base.save_weights(path)

    loaded = backbones.build_extractor("resnet50", str(path), 32)
    fresh = backbones.build_extractor("resnet50", None, 32)
    np.testing.assert_array_equal(np.asarray(loaded(images)), np.asarray(trained(images)))
    assert not np.array_equal(np.asarray(fresh(images)), np.asarray(trained(images)))


def test_random_init_is_the_same_every_build():
    images = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    first = backbones.build_extractor("resnet50", None, 32)(images)
    second = backbones.build_extractor("resnet50", None, 32)(images)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
