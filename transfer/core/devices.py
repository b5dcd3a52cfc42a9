"""Which Keras backend runs, on which device: chosen once per process, before anything imports Keras.

Keras reads KERAS_BACKEND at its first import, so every stage that uses Keras starts with `use(...)`. The
features stage takes its backend from features.backend; the head stages, export and predict use TensorFlow.
On a machine with no NVIDIA driver, the CUDA probing noise of TensorFlow's start-up is silenced.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
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


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null: TensorFlow's C++ start-up lines ("Could not find cuda drivers",
    oneDNN notices) are printed before its logging is set up, so TF_CPP_MIN_LOG_LEVEL cannot hide them."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


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
    quiet = not nvidia_driver_present()
    # Level 3 hides TensorFlow's C++ log lines up to errors, e.g. "failed call to cuInit" when it looks for a GPU
    # or the "NodeDef mentions attribute" notes of Keras' tf.data input: none is actionable, and this project
    # says itself which device it uses and warns when a GPU is present but unused.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with _native_stderr_silenced() if quiet else contextlib.nullcontext(), _hidden(NOT_FOR_KERAS, keep=name):
            import keras

            keras.ops.zeros(1)  # the backend's lazy start-up happens here, inside the silence
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
