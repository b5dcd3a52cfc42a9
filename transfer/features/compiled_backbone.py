"""The backbone compiled once for the chosen Keras backend: uint8 image batches in, float32 features out."""

from __future__ import annotations

import numpy as np

from transfer.core import signals


def padded(rows: np.ndarray, size: int) -> np.ndarray:
    """rows with zero rows added up to `size`. A JIT, or TensorFlow tracing a step, compiles again for each new batch
    shape (seconds per trace for a ResNet50 on a CPU), so a short last batch is padded: one shape, one compilation."""
    return (
        np.concatenate([rows, np.zeros((size - len(rows), *rows.shape[1:]), rows.dtype)]) if len(rows) < size else rows
    )


class Extractor:
    """The model compiled for one backend, as a function of a uint8 image batch giving float32 features.

    start() launches a batch (asynchronously on a GPU) and finish() brings its features to the host, so that
    write_features launches the next batch before it copies the last one's features back and writes them.
    """

    def __init__(self, model, backend_name: str, batch_size: int, on_gpu: bool):
        self.batch_size = batch_size
        # A JIT compiles once per input shape, so a shorter last batch is padded to batch_size (rows dropped after).
        self.pad = backend_name == "jax" or (backend_name == "tensorflow" and on_gpu)
        if backend_name == "tensorflow":  # tf.function, with XLA on a GPU
            import tensorflow as tf

            self.run = tf.function(lambda x: model(x, training=False), jit_compile=on_gpu, reduce_retracing=True)
        elif backend_name == "jax":  # jax.jit of the model as a pure function of its weights
            import jax

            weights = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])
            pure = jax.jit(lambda trainable, frozen, x: model.stateless_call(trainable, frozen, x, training=False)[0])
            self.run = lambda x: pure(*weights, x)
        else:  # PyTorch: eager CUDA kernels (torch.compile would cost minutes per run)
            import torch

            def run(x):
                with torch.inference_mode():
                    return model(x, training=False)

            self.run = run

    def start(self, images: np.ndarray):
        n = len(images)
        if self.pad:
            images = padded(images, self.batch_size)
        with signals.deferred():  # a signal during the backend's C++ code takes effect when it returns
            return self.run(images), n

    def finish(self, started) -> np.ndarray:
        import keras

        features, n = started
        with signals.deferred():
            return np.asarray(keras.ops.convert_to_numpy(features), dtype=np.float32)[:n]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.finish(self.start(images))
