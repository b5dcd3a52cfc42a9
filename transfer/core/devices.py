"""Which Keras backend runs, on which device: chosen once per process, before anything imports Keras.

Keras reads KERAS_BACKEND at its first import, so every stage that uses Keras starts with `use(...)`. The
features stage takes its backend from features.backend; the head stages, export and predict use TensorFlow.
TensorFlow's C++ log lines stay off the stage's stderr (TF_CPP_MIN_LOG_LEVEL 3, and a filter while its libraries
load); anything else written there, such as a native crash's own words, still shows.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import subprocess
import sys
from pathlib import Path

from transfer.core.errors import StageError
from transfer.core.params import BACKENDS

# Optional integrations that `import keras` loads when they are installed, none of which a stage uses: scikit-learn
# (keras.wrappers), JAX (TensorFlow's TFLite helpers), matplotlib (keras.visualization) and pandas (DataFrames as
# fit() input). Each is imported inside try/except ImportError there, so hiding them while Keras loads leaves Keras
# complete for what the stages do and takes about 40 % off its import (benchmarks/README.md, "Experiments"). They
# stay importable afterwards for the code that uses them (the logistic head's scikit-learn, evaluate's plot).
NOT_FOR_KERAS = ("sklearn", "jax", "matplotlib", "pandas")

GPU_INSTALL = {  # what a user runs to get the GPU build of each backend (docs/backends.md)
    "tensorflow": "pip install -r requirements-gpu.txt",
    "jax": 'pip install "jax[cuda13]"',
    "torch": "pip install torch (the default Linux wheel includes CUDA)",
}


def nvidia_driver_present() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


# Drops absl's INFO and WARNING lines and its banner, passes every other line at once. TensorFlow's native libraries
# log those while they load, before TF_CPP_MIN_LOG_LEVEL applies ("I0000 00:00:1796619171.658286   23462
# port.cc:153] oneDNN custom operations are on...", "... cudart_stub.cc:31] Could not find cuda drivers...").
_STDERR_FILTER = r"""
import re, sys
noise = re.compile(rb"WARNING: All log messages before absl::InitializeLog|[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] ")
for line in sys.stdin.buffer:
    if not noise.match(line):
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
"""


@contextlib.contextmanager
def _native_log_filtered():
    """File descriptor 2 through _STDERR_FILTER, in its own process: what a crash wrote before it killed this one
    (a library that cannot load, an abort) still comes out, as the filter reads the pipe to its end. Its own
    session, so that Ctrl-C or DVC stopping the stage does not stop it first."""
    sys.stderr.flush()
    try:
        command = [sys.executable, "-I", "-S", "-c", _STDERR_FILTER]
        log_filter = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=2, start_new_session=True)
    except OSError:  # no process to spare: the lines show, nothing is lost
        yield
        return
    assert log_filter.stdin is not None
    saved = os.dup(2)
    os.dup2(log_filter.stdin.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        log_filter.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):  # a child started meanwhile may hold the pipe open
            log_filter.wait(timeout=10)


@contextlib.contextmanager
def _hidden(modules: tuple[str, ...], keep: str):
    """Make `import m` raise ImportError for each module m not yet imported (and not the backend `keep`)."""
    hidden = [m for m in modules if m != keep and m not in sys.modules]
    sys.modules.update(dict.fromkeys(hidden, None))  # type: ignore[arg-type]  # None: `import m` raises (documented)
    try:
        yield
    finally:
        for module in hidden:
            if sys.modules.get(module, 0) is None:
                del sys.modules[module]


def use(name: str = "tensorflow"):
    """Import Keras running on backend `name` and return the keras module."""
    loaded = sys.modules.get("keras")
    if loaded is not None:
        if loaded.config.backend() != name:
            raise StageError(
                f"Keras is already running on {loaded.config.backend()} in this process, not {name}; "
                "run each backend in its own process (as dvc repro does)"
            )
        return loaded
    if name not in BACKENDS:
        raise StageError(f"unknown Keras backend {name!r}; choose one of {', '.join(BACKENDS)}")
    os.environ["KERAS_BACKEND"] = name
    # Level 3 hides TensorFlow's C++ log lines up to errors once it has loaded, e.g. "failed call to cuInit" when it
    # looks for a GPU or the "E0000 ... NodeDef mentions attribute use_unbounded_threadpool" of Keras' tf.data
    # input in every training: none is actionable, and this project says itself which device it uses and warns
    # when a GPU is present but unused. Set whatever the environment says: a shell's level 2 still shows E lines.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    try:
        with _native_log_filtered(), _hidden(NOT_FOR_KERAS, keep=name):
            import keras

            keras.ops.zeros(1)  # the backend's lazy start-up happens here, inside the filter
        # Keras and its backend leave millions of objects that live as long as the process. Python's cyclic garbage
        # collector would traverse them all at every full collection and again at exit (about 2 s per process for
        # TensorFlow, more than a head's training); frozen, it skips them. Nothing frozen here is garbage.
        gc.freeze()
    except ImportError as error:
        raise StageError(
            f"the {name} backend is not installed ({error}); install it (docs/backends.md) "
            "or set features.backend: tensorflow"
        ) from None
    return keras


def gpu_name(name: str) -> str | None:
    """The first GPU that backend `name` will run on, or None when it runs on the CPU."""
    if name == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name) if gpus else None
    if name == "jax":
        import jax

        device = jax.devices()[0]
        return device.device_kind if device.platform == "gpu" else None
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def prepare_device(name: str) -> str:
    """Set the process up for its device and say which: on a GPU mixed precision (several times faster);
    on the CPU deterministic ops, so two runs give the same bytes."""
    import keras

    gpu = gpu_name(name)
    if gpu:
        keras.mixed_precision.set_global_policy("mixed_float16")
        if name == "torch":
            import torch

            torch.backends.cudnn.benchmark = True  # the batch shape is fixed: let cuDNN pick its fastest kernels
        return f"GPU {gpu} ({name}, mixed precision)"
    if nvidia_driver_present():
        print(
            f"warning: an NVIDIA driver is installed but {name} sees no GPU, so this runs on the CPU; "
            f"install the GPU build: {GPU_INSTALL[name]}",
            file=sys.stderr,
        )
    make_deterministic(name)
    return f"CPU ({name})"


def make_deterministic(name: str) -> None:
    if name == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif name == "torch":
        import torch

        torch.use_deterministic_algorithms(True)
    # JAX is deterministic on the CPU as it is.


def seed_everything(seed: int, name: str = "tensorflow") -> None:
    """Same params, same bytes: seed Python, NumPy and the backend, and make its ops deterministic."""
    import keras

    keras.utils.set_random_seed(seed)
    make_deterministic(name)
