"""The frozen backbones: one definition shared by features, export and predict, on any Keras backend.

Import this module after `transfer.core.devices.use()` has chosen the backend.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from transfer.core import params
from transfer.core.errors import StageError

# Seeds the random initialisation when features.weights is null (drawn with NumPy: the same on every backend).
RANDOM_INIT_SEED = 1234
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class Backbone:
    constructor: str  # the keras.applications class
    preprocess: str  # "caffe": RGB->BGR minus ImageNet mean; "tf": scale to [-1, 1]; "none": built into the model


BACKBONES = {name: Backbone(*spec) for name, spec in params.BACKBONES.items()}


def preprocessing(mode: str) -> list[keras.layers.Layer]:
    """The backbone's own preprocess_input as Keras' built-in layers (no project class, so the exported classifier
    loads with plain `keras.saving.load_model` anywhere): "caffe" is a fixed Dense over the channel axis that swaps
    RGB to BGR and subtracts the ImageNet mean (exactly flip(x) - mean: each output is 1 x one channel + 0 x the
    others, then the bias); "tf" scales to [-1, 1] (x / 127.5 - 1); "none" is built into the model."""
    if mode == "caffe":
        layer = keras.layers.Dense(3, name="preprocess_caffe", trainable=False)
        layer.build((None, 3))
        layer.set_weights([np.eye(3, dtype=np.float32)[::-1], -np.asarray(CAFFE_MEAN_BGR, np.float32)])
        return [layer]
    if mode == "tf":
        # x / 127.5 - 1 as the backbone's own function computes it (Rescaling's x * (1 / 127.5) differs in the last
        # bit): Normalization divides by sqrt(variance) = 127.5, then Rescaling adds -1.
        return [
            keras.layers.Normalization(mean=0.0, variance=127.5**2, name="preprocess_tf_scale"),
            keras.layers.Rescaling(1.0, offset=-1.0, name="preprocess_tf_shift"),
        ]
    if mode == "none":
        return []
    raise ValueError(f"unknown preprocessing mode {mode!r}")


def _weights_error(path: str, name: str, problem: str) -> StageError:
    expected = (
        f"the weights of keras.applications.{BACKBONES[name].constructor} without its top "
        "(a Keras .weights.h5 file, or the legacy .h5 that Keras downloads for weights: imagenet)"
    )
    return StageError(f"features.weights: {path} {problem}; expected {expected}")


def check_weights_file(path: str, name: str) -> None:
    """Fail early, naming features.weights, when `path` is not an HDF5 weights file (every Keras weights
    format is HDF5 underneath; a .keras file is a zip holding one)."""
    import zipfile

    import h5py

    if Path(path).suffix == ".keras" and zipfile.is_zipfile(path):
        return
    try:
        with h5py.File(path, "r"):
            pass
    except OSError as error:
        problem = "is truncated" if "truncated" in str(error) else "is not a Keras weights file (not HDF5)"
        raise _weights_error(path, name, problem) from None


def _load_backbone(name: str, weights: str | None, input_shape: tuple[int, int, int]) -> keras.Model:
    """keras.applications' backbone with global average pooling, its weights loaded, every failure naming
    features.weights."""
    spec = BACKBONES[name]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            base = getattr(keras.applications, spec.constructor)(
                include_top=False, weights=weights, input_shape=input_shape, pooling="avg"
            )
        # Keras 3 loads a .weights.h5 leniently: layers it finds no weights for keep their random init, with only
        # a warning. For a frozen backbone that is a silent disaster, so it is an error here.
        skipped = [
            str(w.message) for w in caught if "Skipping" in str(w.message) or "freshly-initialized" in str(w.message)
        ]
        if skipped:
            raise ValueError(f"{len(skipped)} layer groups have no weights in the file: {skipped[0]}")
        for warning in caught:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    except Exception as error:  # Keras raises a dozen types here; none names our param
        if weights is None:
            raise
        first_line = str(error).strip().splitlines()[0][:200]
        if weights == "imagenet":
            raise StageError(
                f"could not get the ImageNet weights of {spec.constructor} ({first_line}); offline, copy the "
                "weights file into ~/.keras/models/ or set features.weights to its path"
            ) from None
        raise _weights_error(weights, name, f"does not fit the {name} backbone ({first_line})") from None
    return base


def _same_random_init_everywhere(model: keras.Model) -> None:
    """Each backend's random generator draws different numbers from the same seed, so redraw every kernel from
    NumPy (Glorot-uniform, Keras' default); biases, norms and scales keep their constant initial values. A
    random-init backbone (features.weights: null, for tests) then gives the same features on every backend."""
    rng = np.random.default_rng(RANDOM_INIT_SEED)
    for variable in model.weights:
        if variable.name == "kernel":
            shape = tuple(variable.shape)
            receptive_field = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
            limit = np.sqrt(6 / ((shape[-2] + shape[-1]) * receptive_field))
            variable.assign(rng.uniform(-limit, limit, shape).astype(variable.dtype))


def build_extractor(name: str, weights: str | None, image_size: int) -> keras.Model:
    """Preprocessing plus the frozen backbone with global average pooling: images in, pooled features out.

    The images are RGB with values 0-255, of any dtype (uint8 travels to a GPU four times faster).
    """
    if weights not in (None, "imagenet"):
        check_weights_file(weights, name)
    # Keras' PyTorch convolutions transpose channels-last tensors around every layer; channels-first (the same
    # weights, the same features) skips that. The model still takes channels-last images.
    channels_first = keras.config.backend() == "torch"
    layout = keras.config.image_data_format()
    try:
        keras.config.set_image_data_format("channels_first" if channels_first else "channels_last")
        shape = (3, image_size, image_size) if channels_first else (image_size, image_size, 3)
        base = _load_backbone(name, weights, shape)
    finally:
        keras.config.set_image_data_format(layout)
    if weights is None:
        _same_random_init_everywhere(base)
    base.trainable = False
    images = keras.Input((image_size, image_size, 3), name="images")
    pixels = images
    for layer in preprocessing(BACKBONES[name].preprocess):
        pixels = layer(pixels)
    if channels_first:
        pixels = keras.layers.Permute((3, 1, 2))(pixels)
    features = base(pixels, training=False)
    return keras.Model(images, features, name=f"{name}_features")
