"""Stage 4: run the frozen backbone once over every image and cache the pooled features.

Runs on the Keras backend named by features.backend (TensorFlow, JAX or PyTorch), on its GPU when it has one
(mixed precision), else on the CPU (deterministic). Worker processes decode and resize images with the shared
decoder (stages/images.py) into shared memory a few batches ahead of the model, which is compiled once for the
backend; features are appended to the .npy files as they come, so memory does not grow with the dataset.
Writes data/features/<part>/{features,labels}.npy and classes.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from stages import backend, params
from stages.common import StageError, atomic_output, run, write_json
from stages.feature_cache import PARTS
from stages.images import ImageError, load_image


def read_manifests(split_dir: Path) -> dict[str, pd.DataFrame]:
    manifests = {}
    for part in PARTS:
        path = Path(split_dir) / f"{part}.csv"
        if not path.is_file():
            raise StageError(f"{path} not found; run `dvc repro split` first")
        manifests[part] = pd.read_csv(path, dtype=str, keep_default_na=False)
    return manifests


# In each decoding worker process: the shared batch buffers (set by _attach), and the mapping behind them.
_SLOTS: np.ndarray | None = None
_MEMORY = None


def _attach(name: str, shape: tuple[int, ...]) -> None:
    from multiprocessing import shared_memory

    global _SLOTS, _MEMORY
    # Spawned workers share the parent's resource tracker, so attaching adds no second owner: the parent unlinks.
    _MEMORY = shared_memory.SharedMemory(name=name)
    _SLOTS = np.ndarray(shape, np.uint8, buffer=_MEMORY.buf)


def _decode_into(slot: int, start: int, paths: list[str]) -> None:
    """Decode paths into rows start.. of a shared batch (runs in a worker process)."""
    size = _SLOTS.shape[2]
    for row, path in enumerate(paths, start):
        try:
            _SLOTS[slot, row] = load_image(path, size)
        except ImageError as error:
            raise StageError(
                f"{path}: {error}. The extract stage kept it with the same decoder, so the file has changed "
                "since: run `dvc checkout data/images` to restore it, or `dvc repro -f extract` to re-extract"
            ) from None


SHM = "/dev/shm"  # where Linux keeps shared memory; Docker gives a container 64 MiB there unless told otherwise


def _shared_memory_free() -> int:
    try:
        return shutil.disk_usage(SHM).free
    except OSError:  # no /dev/shm (macOS, Windows): shared memory is ordinary memory there
        return 2**62


class ImageDecoder:
    """Worker processes that decode and resize images (stages/images.py) into batches in shared memory, a few
    batches ahead of the model. Processes, not threads: Pillow holds the GIL for much of each small image, so
    threads stop scaling at about two cores.

        with ImageDecoder(image_size, batch_size) as decoder:
            for batch in decoder.batches(paths): ...   # uint8 (n, size, size, 3)
    """

    def __init__(self, image_size: int, batch_size: int, workers: int | None = None):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import shared_memory

        self.workers = workers or min(32, os.cpu_count() or 1)
        self.batch_size = batch_size
        # Batches decoding, two held by the caller (one in the model), one spare; as many as /dev/shm holds.
        batch_bytes = batch_size * image_size * image_size * 3
        self.n_slots = min(self.workers + 3, max(3, _shared_memory_free() // 2 // batch_bytes))
        if self.n_slots * batch_bytes > _shared_memory_free():
            raise StageError(
                f"shared memory ({SHM}) has {_shared_memory_free() / 2**20:.0f} MiB free, too little for 3 batches "
                f"of {batch_bytes / 2**20:.0f} MiB; lower features.batch_size, or give the container more (Docker: "
                "--shm-size=2g)"
            )
        shape = (self.n_slots, batch_size, image_size, image_size, 3)
        self.memory = shared_memory.SharedMemory(create=True, size=int(np.prod(shape)))
        self.slots = np.ndarray(shape, np.uint8, buffer=self.memory.buf)
        # spawn: forking a process that runs TensorFlow or JAX threads can deadlock the child.
        self.pool = ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_attach,
            initargs=(self.memory.name, shape),
        )

    def __enter__(self) -> ImageDecoder:
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        del self.slots
        self.memory.unlink()  # freed once the last view of it is gone
        with contextlib.suppress(BufferError):  # a caller may still hold a batch
            self.memory.close()

    def _submit(self, slot: int, chunk: list[str]) -> list:
        # Split each batch across the workers so that even one batch is decoded in parallel.
        step = max(4, -(-len(chunk) // self.workers))
        return [self.pool.submit(_decode_into, slot, i, chunk[i : i + step]) for i in range(0, len(chunk), step)]

    def batches(self, paths: list[str]) -> Iterator[np.ndarray]:
        """uint8 (n, image_size, image_size, 3) batches in the order of `paths`. Asking for a batch reuses the
        buffer of the one before the last: a caller may hold two batches at a time, not more."""
        in_flight: deque = deque()
        chunks = [paths[i : i + self.batch_size] for i in range(0, len(paths), self.batch_size)]
        for number, chunk in enumerate(chunks):
            if len(in_flight) == self.n_slots - 2:  # keep the slots of the two batches the caller holds untouched
                yield self._collect(*in_flight.popleft())
            slot = number % self.n_slots
            in_flight.append((slot, len(chunk), self._submit(slot, chunk)))
        while in_flight:
            yield self._collect(*in_flight.popleft())

    def _collect(self, slot: int, n: int, futures: list) -> np.ndarray:
        for future in futures:
            future.result()  # re-raises a worker's StageError
        return self.slots[slot, :n]


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
        if self.pad and n < self.batch_size:
            images = np.concatenate([images, np.zeros((self.batch_size - n, *images.shape[1:]), images.dtype)])
        return self.run(images), n

    def finish(self, started) -> np.ndarray:
        import keras

        features, n = started
        return np.asarray(keras.ops.convert_to_numpy(features), dtype=np.float32)[:n]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.finish(self.start(images))


def write_features(extractor: Extractor, batches, n_images: int, n_features: int, out: Path, desc: str) -> None:
    """Run every batch through the model and append its rows to out, a float32 (n_images, n_features) .npy
    file: the same bytes as np.save, written as they come, so memory stays flat however many images.
    One batch is in flight while the one before it is copied back and written (ImageDecoder keeps both)."""
    from tqdm import tqdm

    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
        "fortran_order": False,
        "shape": (n_images, n_features),
    }
    with open(out, "wb") as file, tqdm(total=n_images, desc=desc, unit="img", file=sys.stderr) as bar:
        np.lib.format.write_array_header_1_0(file, header)

        def write(rows: np.ndarray) -> None:
            file.write(np.ascontiguousarray(rows, dtype=np.float32).data)
            bar.update(len(rows))

        in_flight = None
        for batch in batches:
            launched = extractor.start(batch)
            if in_flight is not None:
                write(extractor.finish(in_flight))
            in_flight = launched
        if in_flight is not None:
            write(extractor.finish(in_flight))
    if bar.n != n_images:
        raise StageError(f"{out}: wrote {bar.n} feature rows for {n_images} images")


def extract_features(images_dir: Path, split_dir: Path, features_dir: Path, config: params.FeaturesParams) -> dict:
    manifests = read_manifests(split_dir)
    classes = sorted(manifests["train"]["label"].unique())
    index = {label: i for i, label in enumerate(classes)}
    for part, frame in manifests.items():
        unknown = set(frame["label"]) - set(index)
        if unknown:
            raise StageError(f"{split_dir}/{part}.csv has labels missing from train.csv: {sorted(unknown)[:5]}")

    backend.use(config.backend)
    from stages.backbones import build_extractor

    device = backend.prepare_device(config.backend)
    model = build_extractor(config.backbone, config.weights, config.image_size)  # weights checked before any image
    n_features = model.output_shape[-1]
    extractor = Extractor(model, config.backend, config.batch_size, device.startswith("GPU"))
    print(f"features: {config.backbone} ({n_features}-d) at {config.image_size}px on {device}", file=sys.stderr)

    start, total = time.perf_counter(), sum(map(len, manifests.values()))
    with atomic_output(Path(features_dir)) as tmp, ImageDecoder(config.image_size, config.batch_size) as decoder:
        for part, frame in manifests.items():
            (tmp / part).mkdir(parents=True)
            paths = [str(Path(images_dir) / p) for p in frame["path"]]
            batches = decoder.batches(paths)
            write_features(extractor, batches, len(paths), n_features, tmp / part / "features.npy", part)
            np.save(tmp / part / "labels.npy", frame["label"].map(index).to_numpy(np.int32))
        write_json(tmp / "classes.json", classes)
    seconds = time.perf_counter() - start
    print(f"features: {total} images in {seconds:.1f} s ({total / seconds:.0f} img/s) on {device}")
    return {"images": total, "seconds": seconds, "device": device, "n_features": n_features}


def main(images_dir: Path, split_dir: Path, features_dir: Path) -> None:
    extract_features(images_dir, split_dir, features_dir, params.load().features)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images_dir", type=Path, help="class folders of images (data/images)")
    parser.add_argument("split_dir", type=Path, help="train/val/test manifests (data/split)")
    parser.add_argument("features_dir", type=Path, help="where the cached features are written (data/features)")
    args = parser.parse_args()
    run(lambda: main(args.images_dir, args.split_dir, args.features_dir))
