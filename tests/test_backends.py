"""features.backend: the same weights file gives the same features on TensorFlow and JAX, each repeatable; choosing a
backend (transfer/core/devices.py) fails clearly and hides TensorFlow's start-up log, not a crash."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from synthetic.datasets import make_image_folders
from synthetic.repos import ROOT, small_params, subprocess_env
from tests.helpers import run_stage
from transfer.core import devices
from transfer.core.errors import StageError

PARTS = ("train", "val", "test")


def test_keras_cannot_switch_backend_inside_a_process():
    keras = devices.use("tensorflow")
    assert keras.config.backend() == "tensorflow"
    with pytest.raises(StageError, match="already running on tensorflow in this process, not jax"):
        devices.use("jax")


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


def run_features(workspace, name: str, run: str, weights: str | None = "resnet50.weights.h5"):
    """The features stage as DVC runs it, in its own process, with features.backend = name."""
    folder = workspace / f"{name}-{run}"
    folder.mkdir()
    params = small_params("unused.zip", None)
    params["features"].update(backend=name, weights=weights and str(workspace / weights), batch_size=5)
    result = run_stage("features", workspace / "images", workspace / "split", "features", cwd=folder, params=params)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"on CPU ({name})" in result.stdout
    return {part: (folder / "features" / part / "features.npy").read_bytes() for part in PARTS}


@pytest.mark.e2e
def test_tensorflow_and_jax_agree_and_jax_is_byte_identical_between_runs(workspace):
    # TensorFlow's own repeatability is checked by tests.check_reproducible (the whole pipeline, twice). Its run here
    # is in this process, which has TensorFlow loaded already; JAX's runs are the stage as DVC runs it.
    from stages.features import extract_features
    from transfer.core.params import FeaturesParams

    features = small_params("unused.zip", None)["features"]
    features.update(backend="tensorflow", weights=str(workspace / "resnet50.weights.h5"), batch_size=5)
    out = workspace / "tensorflow-0" / "features"
    extract_features(workspace / "images", workspace / "split", out, FeaturesParams(**features))
    tensorflow = {part: (out / part / "features.npy").read_bytes() for part in PARTS}
    first, second = (run_features(workspace, "jax", str(i)) for i in range(2))
    assert first == second, "jax: two runs on the CPU gave different bytes"
    assert tensorflow != first  # same numbers to rounding, not the same bytes: the comparison below is real
    for part in PARTS:
        tf_rows = np.load(workspace / "tensorflow-0" / "features" / part / "features.npy")
        jax_rows = np.load(workspace / "jax-0" / "features" / part / "features.npy")
        assert tf_rows.shape == jax_rows.shape and tf_rows.dtype == jax_rows.dtype == np.float32
        # Same weights, same pixels: equal up to float32 rounding in a different order of operations.
        np.testing.assert_allclose(jax_rows, tf_rows, rtol=1e-4, atol=1e-4 * np.abs(tf_rows).max())
        assert np.abs(tf_rows).max() > 1  # real activations, not zeros


@pytest.mark.e2e
def test_a_backend_that_is_not_installed_is_a_clear_error():
    # torch hidden from the import system, as on a machine without it.
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from transfer.core import devices\n"
        "from transfer.core.cli import run\n"
        "run(lambda: devices.use('torch'))\n"
    )
    env = {**subprocess_env(), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.startswith("error: the torch backend is not installed")
    assert "features.backend: tensorflow" in result.stderr and "Traceback" not in result.stderr


# A stand-in for Keras whose import does what TensorFlow's libraries can do while they load: log an absl INFO line,
# then write from C to file descriptor 2 and abort (TensorFlow on a CPU without AVX).
CRASHING_KERAS = """
import ctypes, os
libc = ctypes.CDLL(None)
for line in (b"I0000 00:00:1796619171.658286   23462 port.cc:153] oneDNN custom operations are on.\\n",
             b"The TensorFlow library was compiled to use AVX instructions, but these aren't available.\\n"):
    libc.write(2, line, len(line))
os.abort()
"""


def test_a_native_crash_while_keras_loads_is_shown_and_the_start_up_log_is_not(tmp_path):
    (tmp_path / "keras").mkdir()
    (tmp_path / "keras" / "__init__.py").write_text(CRASHING_KERAS)
    env = {**subprocess_env(), "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    code = "from transfer.core import devices\ndevices.use('tensorflow')\n"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGABRT, result.stderr
    assert result.stderr == "The TensorFlow library was compiled to use AVX instructions, but these aren't available.\n"


def test_a_driver_without_a_visible_gpu_is_warned_about(monkeypatch, capsys):
    # A typical GPU machine with plain `tensorflow` installed: the driver answers, TensorFlow sees no GPU.
    monkeypatch.setattr(devices, "nvidia_driver_present", lambda: True)
    monkeypatch.setattr(devices, "gpu_name", lambda name: None)
    assert devices.prepare_device("tensorflow") == "CPU (tensorflow)"
    warning = capsys.readouterr().err
    assert "an NVIDIA driver is installed but tensorflow sees no GPU" in warning
    assert "pip install -r requirements-gpu.txt" in warning
