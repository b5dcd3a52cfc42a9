"""features.backend: the same weights file gives the same features on TensorFlow and JAX, each repeatable."""

import numpy as np
import pytest

from stages import backend
from stages.common import StageError
from tests.helpers import run_stage
from tools.scratch_repo import small_params
from tools.synthetic import make_image_folders

PARTS = ("train", "val", "test")


def test_keras_cannot_switch_backend_inside_a_process():
    keras = backend.use("tensorflow")
    assert keras.config.backend() == "tensorflow"
    with pytest.raises(StageError, match="already running on tensorflow in this process, not jax"):
        backend.use("jax")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Images, their split and a weights file saved once, shared by every backend's run."""
    import keras

    from stages.split import list_images, split_images, write_manifests

    root = tmp_path_factory.mktemp("backends")
    make_image_folders(root / "images", n_classes=3, per_class=8, size=40, seed=5, extras=False)
    write_manifests(split_images(list_images(root / "images"), 0.25, 0.25, 0), root / "split")
    keras.utils.set_random_seed(3)
    base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    base.save_weights(root / "resnet50.weights.h5")
    return root


def run_features(workspace, name: str, run: str):
    """The features stage as DVC runs it, in its own process, with features.backend = name."""
    folder = workspace / f"{name}-{run}"
    folder.mkdir()
    params = small_params("unused.zip", None)
    params["features"].update(backend=name, weights=str(workspace / "resnet50.weights.h5"), batch_size=5)
    result = run_stage("features", workspace / "images", workspace / "split", "features", cwd=folder, params=params)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"on CPU ({name})" in result.stdout
    return {part: (folder / "features" / part / "features.npy").read_bytes() for part in PARTS}


@pytest.mark.e2e
def test_tensorflow_and_jax_agree_and_each_is_byte_identical_between_runs(workspace):
    runs = {name: [run_features(workspace, name, str(i)) for i in range(2)] for name in ("tensorflow", "jax")}
    for name, (first, second) in runs.items():
        assert first == second, f"{name}: two runs on the CPU gave different bytes"
    for part in PARTS:
        tf_rows = np.load(workspace / "tensorflow-0" / "features" / part / "features.npy")
        jax_rows = np.load(workspace / "jax-0" / "features" / part / "features.npy")
        assert tf_rows.shape == jax_rows.shape and tf_rows.dtype == jax_rows.dtype == np.float32
        # Same weights, same pixels: equal up to float32 rounding in a different order of operations.
        np.testing.assert_allclose(jax_rows, tf_rows, rtol=1e-4, atol=1e-4 * np.abs(tf_rows).max())
        assert np.abs(tf_rows).max() > 1  # real activations, not zeros
