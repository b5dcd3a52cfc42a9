"""features.weights given as a file: both Keras formats work; anything else fails before any image is read."""

import h5py
import numpy as np
import pytest

from stages.features import extract_features
from tests.helpers import SMALL_FEATURES
from transfer.core.errors import StageError
from transfer.core.params import FeaturesParams

SIZE = 32


@pytest.fixture(scope="module")
def saved_weights(tmp_path_factory):
    """One random-init ResNet50 (no top), its weights saved in the Keras 3 format and in the legacy HDF5
    format that Keras downloads for weights: imagenet."""
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    folder = tmp_path_factory.mktemp("weights")
    keras.utils.set_random_seed(99)
    base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3), pooling="avg")
    modern, legacy = folder / "resnet50.weights.h5", folder / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    base.save_weights(modern)
    with h5py.File(legacy, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, base)
    return {"modern": modern, "legacy": legacy, "folder": folder}


def test_legacy_and_keras3_weight_files_give_the_same_features(saved_weights):
    from transfer.features.backbones import build_extractor

    images = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3)).astype(np.uint8)
    modern = np.asarray(build_extractor("resnet50", str(saved_weights["modern"]), SIZE)(images))
    legacy = np.asarray(build_extractor("resnet50", str(saved_weights["legacy"]), SIZE)(images))
    random_init = np.asarray(build_extractor("resnet50", None, SIZE)(images))
    np.testing.assert_array_equal(modern, legacy)
    assert not np.allclose(modern, random_init)  # the file's weights were really loaded


def _bad_weights(saved_weights, kind: str):
    folder = saved_weights["folder"]
    if kind == "text":
        path = folder / "notes.h5"
        path.write_text("these are not weights\n")
    elif kind == "truncated":
        path = folder / "truncated.weights.h5"
        data = saved_weights["modern"].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:  # the weights of another backbone
        import keras

        path = folder / "mobilenet.weights.h5"
        other = keras.applications.MobileNetV3Large(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
        other.save_weights(path)
    return path


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("text", "is not a Keras weights file"),
        ("truncated", "is truncated"),
        ("other_backbone", "does not fit the resnet50 backbone"),
    ],
)
def test_a_wrong_weights_file_is_named_before_any_image_is_read(saved_weights, tmp_path, kind, problem):
    path = _bad_weights(saved_weights, kind)
    split = tmp_path / "split"
    split.mkdir()
    for part in ("train", "val", "test"):  # manifests naming images that do not exist
        (split / f"{part}.csv").write_text("path,label\nmissing/a.jpg,a\nmissing/b.jpg,b\n")
    config = FeaturesParams(**{**SMALL_FEATURES, "weights": str(path)})
    with pytest.raises(StageError) as raised:
        extract_features(tmp_path / "images", split, tmp_path / "features", config)
    message = str(raised.value)
    assert message.startswith(f"features.weights: {path} {problem}")
    assert "keras.applications.ResNet50 without its top" in message and len(message) < 600
    assert not (tmp_path / "features").exists()
