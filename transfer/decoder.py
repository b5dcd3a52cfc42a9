"""Decoding images in worker processes into batches in shared memory, a few batches ahead of the model."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections import deque
from collections.abc import Iterator

import numpy as np

from transfer.errors import StageError
from transfer.images import ImageError, load_image

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
    """Worker processes that decode and resize images (transfer/images.py) into batches in shared memory, a few
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
