"""Decoding images in worker processes into batches in shared memory, a few batches ahead of the model."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
from collections import deque
from collections.abc import Iterator

import numpy as np

from transfer.core import signals
from transfer.core.errors import StageError
from transfer.core.images import ImageError, load_image
from transfer.features import workers as lifecycle


def _decode_into(slots: np.ndarray, slot: int, start: int, paths: list[str], seeds: list[int] | None) -> str | None:
    """Decode paths into rows start.. of a shared batch (in a worker), augmented with its seed each when seeds are
    given (transfer/core/images.py); the message for the parent if one fails."""
    size = slots.shape[2]
    for row, path in enumerate(paths, start):
        try:
            slots[slot, row] = load_image(path, size, seeds[row - start] if seeds is not None else None)
        except ImageError as error:
            return (
                f"{path}: {error}. The extract stage kept it with the same decoder, so the file has changed "
                "since: run `dvc checkout data/images` to restore it, or `dvc repro -f extract` to re-extract"
            )
    return None


def _serve(connection, parent: int, name: str, shape: tuple[int, ...]) -> None:
    """A worker: decode the chunks the parent sends until its end of the pipe closes (it finished, or died)."""
    from multiprocessing import shared_memory

    lifecycle.die_with_parent(parent)
    signals.ignore_interrupts()
    # Spawned workers share the parent's resource tracker, so attaching adds no second owner: the parent unlinks.
    memory = shared_memory.SharedMemory(name=name)
    slots = np.ndarray(shape, np.uint8, buffer=memory.buf)
    with contextlib.suppress(EOFError, OSError):  # OSError: the parent is gone while we answer
        while True:
            task = connection.recv()
            try:
                connection.send(("image", _decode_into(slots, *task)))
            except Exception as error:  # a bug or MemoryError: the parent raises it, naming the worker
                connection.send(("crash", f"{type(error).__name__}: {error}"))


SHM = str(lifecycle.SHM)  # Docker gives a container 64 MiB there unless told otherwise


def _shared_memory_free() -> int:
    try:
        return shutil.disk_usage(SHM).free
    except OSError:  # no /dev/shm (macOS, Windows): shared memory is ordinary memory there
        return 2**62


def slot_count(workers: int, image_size: int, batch_size: int) -> int:
    """Batches decoding (one per worker), two held by the caller (one in the model), one spare; as many as the
    free shared memory holds, at most half of it."""
    batch_bytes = batch_size * image_size * image_size * 3
    return min(workers + 3, max(3, _shared_memory_free() // 2 // batch_bytes))


class ImageDecoder:
    """Worker processes that decode and resize images (transfer/core/images.py) into batches in shared memory, a few
    batches ahead of the model. Processes, not threads: Pillow holds the GIL for much of each small image, so
    threads stop scaling at about two cores. The workers exit with the process that made them, however it ends
    (transfer/features/workers.py).

        with ImageDecoder(image_size, batch_size) as decoder:
            for batch in decoder.batches(paths): ...   # uint8 (n, size, size, 3)
    """

    def __init__(self, image_size: int, batch_size: int, workers: int | None = None):
        import multiprocessing
        from multiprocessing import shared_memory

        self.workers = workers or min(32, os.cpu_count() or 1)
        self.batch_size = batch_size
        batch_bytes = batch_size * image_size * image_size * 3
        self.n_slots = slot_count(self.workers, image_size, batch_size)
        if self.n_slots * batch_bytes > _shared_memory_free():
            raise StageError(
                f"shared memory ({SHM}) has {_shared_memory_free() / 2**20:.0f} MiB free, too little for 3 batches "
                f"of {batch_bytes / 2**20:.0f} MiB; lower features.batch_size, or give the container more (Docker: "
                "--shm-size=2g)"
            )
        lifecycle.remove_orphaned_segments()
        shape = (self.n_slots, batch_size, image_size, image_size, 3)
        self.processes, self.connections, self.memory = [], [], None
        self._turn, self._unanswered = 0, [0] * self.workers
        # spawn: forking a process that runs TensorFlow or JAX threads can deadlock the child.
        context = multiprocessing.get_context("spawn")
        try:
            with signals.signals_held():
                size = int(np.prod(shape))
                self.memory = shared_memory.SharedMemory(lifecycle.segment_name(), create=True, size=size)
                self.slots = np.ndarray(shape, np.uint8, buffer=self.memory.buf)
                for _ in range(self.workers):
                    mine, theirs = context.Pipe()
                    process = context.Process(
                        target=_serve, args=(theirs, os.getpid(), self.memory.name, shape), daemon=True
                    )
                    process.start()
                    theirs.close()  # only the worker holds its end: its death reads as EOF here
                    self.processes.append(process)
                    self.connections.append(mine)
        except BaseException:  # a Ctrl-C held back while the workers started arrives here
            self.close(failed=True)
            raise
        # Should a caller never close the decoder, stop the workers before multiprocessing's own exit handler
        # joins them (it would wait on workers that ignore its SIGTERM).
        atexit.register(self.close, True)

    def __enter__(self) -> ImageDecoder:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(failed=kind is not None)

    def close(self, failed: bool = False) -> None:
        """Stop the workers (at once after a failure, else once they finish) and free the shared memory."""
        atexit.unregister(self.close)
        for connection in self.connections:
            connection.close()  # a worker waiting for work reads EOF and exits
        for process in self.processes:
            if failed and process.is_alive():
                process.kill()  # SIGKILL: no cleanup to wait for, and no traceback
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
        self.processes, self.connections = [], []
        with contextlib.suppress(AttributeError):
            del self.slots
        memory = getattr(self, "memory", None)
        if memory is not None:
            with contextlib.suppress(FileNotFoundError):
                memory.unlink()  # freed once the last view of it is gone
            with contextlib.suppress(BufferError):  # a caller may still hold a batch
                memory.close()
            self.memory = None

    def _submit(self, slot: int, chunk: list[str], seeds: list[int] | None) -> list[int]:
        # Split each batch across the workers so that even one batch is decoded in parallel.
        step = max(4, -(-len(chunk) // self.workers))
        sent = []
        for start in range(0, len(chunk), step):
            worker = self._turn % self.workers
            self._turn += 1
            part = seeds[start : start + step] if seeds is not None else None
            self._send(worker, (slot, start, chunk[start : start + step], part))
            sent.append(worker)
        return sent

    def _send(self, worker: int, task) -> None:
        try:
            self.connections[worker].send(task)
        except OSError:
            raise self._died(worker) from None
        self._unanswered[worker] += 1

    def _answer(self, worker: int) -> tuple[str, str | None]:
        try:
            answer = self.connections[worker].recv()
        except (EOFError, OSError):
            raise self._died(worker) from None
        self._unanswered[worker] -= 1
        return answer

    def _died(self, worker: int) -> StageError:
        process = self.processes[worker]
        process.join(timeout=5)
        code = process.exitcode
        how = f"was killed by {signal.Signals(-code).name}" if code and code < 0 else f"exited with status {code}"
        return StageError(
            f"an image decoding worker (pid {process.pid}) {how}; if the system ran out of memory (the kernel log, "
            "`dmesg`, says so), lower features.batch_size or features.image_size"
        )

    def batches(self, paths: list[str], seeds: list[int] | None = None) -> Iterator[np.ndarray]:
        """uint8 (n, image_size, image_size, 3) batches in the order of `paths`, each image augmented with its seed
        when `seeds` are given (fine-tuning). Asking for a batch reuses the buffer of the one before the last: a
        caller may hold two batches at a time, not more."""
        for worker, count in enumerate(self._unanswered):  # answers to a pass the caller left unfinished
            for _ in range(count):
                self._answer(worker)
        in_flight: deque = deque()
        chunks = [paths[i : i + self.batch_size] for i in range(0, len(paths), self.batch_size)]
        for number, chunk in enumerate(chunks):
            if len(in_flight) == self.n_slots - 2:  # keep the slots of the two batches the caller holds untouched
                yield self._collect(*in_flight.popleft())
            slot = number % self.n_slots
            first = number * self.batch_size
            chunk_seeds = seeds[first : first + len(chunk)] if seeds is not None else None
            in_flight.append((slot, len(chunk), self._submit(slot, chunk, chunk_seeds)))
        while in_flight:
            yield self._collect(*in_flight.popleft())

    def _collect(self, slot: int, n: int, workers: list[int]) -> np.ndarray:
        # Each worker answers its chunks in the order they were sent, so its next answer is for this batch.
        problems = []
        for worker in workers:
            kind, message = self._answer(worker)
            if message is not None:
                problems.append((kind, message))
        for kind, message in problems:
            if kind == "crash":
                raise RuntimeError(f"an image decoding worker failed: {message}")
            raise StageError(message)
        return self.slots[slot, :n]
