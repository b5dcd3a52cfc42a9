"""A saved head's forward pass in NumPy: what evaluate runs, without importing Keras (and TensorFlow) for it.

Importing Keras on TensorFlow takes several seconds per process, more than the whole of evaluation on the cached
features. The heads train.py saves are Keras Sequential models of a handful of layer kinds; this reads the same
.keras file (config.json and model.weights.h5 in a zip) and applies those layers in float32 as Keras' TensorFlow
backend does, to within float32 rounding (tests/test_evaluate.py checks it against keras on both heads). A layer
kind it does not know is an error naming the file, never a silent guess.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np

from transfer.core.errors import StageError

EPSILON = 1e-7  # keras.backend.epsilon(), Normalization's floor on the standard deviation


def _key(class_name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", class_name).lower()


def load_head(path: Path) -> tuple[int | None, list[tuple[str, dict, list[np.ndarray]]]]:
    """A saved Sequential head: its input width, and its layers as (class name, config, weights) in call order."""
    import h5py

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            weights = io.BytesIO(archive.read("model.weights.h5"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as error:
        raise StageError(f"{path} is not a Keras model file saved by `dvc repro train` ({error})") from None
    if config.get("class_name") != "Sequential":
        raise StageError(f"{path}: a {config.get('class_name')} model, not a head saved by `dvc repro train`")
    layers: list[tuple[str, dict, list[np.ndarray]]] = []
    seen: dict[str, int] = {}
    width = None
    with h5py.File(weights, "r") as h5:
        for layer in config["config"]["layers"]:
            kind = layer["class_name"]
            if kind == "InputLayer":
                width = layer["config"]["batch_shape"][-1]
                continue
            # Keras names each layer's weights group by its class, numbered in order of appearance.
            count = seen.get(kind, 0)
            seen[kind] = count + 1
            group = h5.get(f"layers/{_key(kind)}{f'_{count}' if count else ''}/vars")
            values = [np.asarray(group[str(i)]) for i in range(len(group))] if group is not None else []
            layers.append((kind, layer["config"], values))
    return width, layers


def _activation(name: str, x: np.ndarray) -> np.ndarray:
    if name == "linear":
        return x
    if name == "relu":
        return np.maximum(x, 0)
    if name == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise ValueError(name)


def predict(path: Path, features: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The head's outputs (float32) for features, in inference mode (Dropout off, BatchNorm's moving stats)."""
    width, layers = load_head(path)
    if width is not None and features.ndim == 2 and features.shape[1] != width:
        raise StageError(
            f"{path} takes {width} features per image, the cached features have {features.shape[1]}; "
            "rerun `dvc repro train` (the head was trained on other features)"
        )
    starts = range(0, len(features), batch_size)
    outputs = [_forward(path, layers, features[start : start + batch_size]) for start in starts]
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


def _forward(path: Path, layers, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    for kind, config, weights in layers:
        if kind == "Dropout":
            continue
        if kind == "Dense":
            x = x @ weights[0]
            if config.get("use_bias", True):
                x = x + weights[1]
            try:
                x = _activation(config.get("activation", "linear"), x)
            except ValueError:
                raise StageError(f"{path}: activation {config.get('activation')!r} is not supported") from None
        elif kind == "BatchNormalization":
            values = list(weights)
            gamma = values.pop(0) if config.get("scale", True) else None
            beta = values.pop(0) if config.get("center", True) else None
            mean, variance = values
            # tf.nn.batch_normalization's arithmetic, as Keras on TensorFlow calls it.
            inv = 1 / np.sqrt(variance + np.float32(config["epsilon"]))
            if gamma is not None:
                inv = inv * gamma
            x = x * inv + ((beta if beta is not None else 0) - mean * inv)
        elif kind == "Normalization" and not config.get("invert", False):
            mean = np.asarray(config["mean"], dtype=np.float32)
            deviation = np.maximum(np.sqrt(np.asarray(config["variance"], dtype=np.float32)), np.float32(EPSILON))
            x = (x - mean) / deviation
        else:
            raise StageError(
                f"{path}: layer {kind} is not supported by the NumPy forward pass "
                "(transfer/evaluation/numpy_forward.py)"
            )
        x = x.astype(np.float32, copy=False)
    return x
