"""Ctrl-C and termination signals, in one place: how each ends a stage, held back while TensorFlow's C++ code runs.

A signal handler raises its exception (KeyboardInterrupt, Terminated) wherever Python happens to be. Inside
TensorFlow's C++ code (tracing a tf.function, running a batch) the exception is printed there as a traceback
("SystemError: <built-in function __import__> returned a result with an exception set"), seen about once in ten
Ctrl-Cs during feature extraction. Code that calls into the backend runs inside `deferred()`: a signal arriving
then is raised when the block ends, a batch later at most, where Python cleans up and says one line.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator

_depth = 0
_pending: list[BaseException] = []


def raise_or_defer(make: Callable[[], BaseException]) -> None:
    """For a signal handler: raise make()'s exception now, or at the end of the running deferred() block."""
    if _depth:
        _pending.append(make())
        return
    raise make()


@contextlib.contextmanager
def ctrl_c_raises(received: list[int]) -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt (or at the end of a deferred() block), and is noted in `received`, so that
    whatever exception then arrives changed can be reported as the interruption it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_interrupt(signum, frame):
        received.append(signum)
        raise_or_defer(KeyboardInterrupt)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
    if not _depth and _pending:
        error = _pending[0]
        _pending.clear()
        raise error


def ignore_interrupts() -> None:
    """In a worker: Ctrl-C, SIGTERM and SIGHUP sent to the whole process group are for the parent, which stops
    the workers itself after cleaning up (and no worker prints a KeyboardInterrupt traceback)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def signals_held():
    """Start child processes with SIGINT and SIGHUP blocked. A Ctrl-C during a worker's start-up (before it can
    ignore it) then cannot print a KeyboardInterrupt traceback from each worker, and multiprocessing's resource
    tracker, started here too, keeps SIGHUP blocked: when a closed terminal sends SIGHUP to the whole group, it
    lives on to free the shared memory after the parent has cleaned up. The parent gets its signal afterwards."""
    from multiprocessing import resource_tracker

    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        resource_tracker.ensure_running()
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGHUP})
    try:
        resource_tracker.ensure_running()
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Terminated(SystemExit):
    """SIGTERM or SIGHUP, raised in the main thread so that `with` blocks and `finally` clauses clean up."""


@contextlib.contextmanager
def termination_cleans_up():
    """Turn SIGTERM (`kill PID`, a CI runner's timeout, `systemctl stop`) and SIGHUP (the terminal closed) into an
    exception with exit status 128 + signal, so that scratch output, shared memory and workers are removed as
    after Ctrl-C; a second such signal ends the process at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGTERM, signal.SIGHUP)
    received: list[int] = []

    def handler(signum, frame):
        received.append(signum)
        for other in signals:
            signal.signal(other, signal.SIG_DFL)
        raise_or_defer(lambda: Terminated(128 + signum))

    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    except BaseException:
        if not received:
            raise
        # Said once everything inside has cleaned up, as cli.run says "interrupted". The exception a handler raises
        # can arrive changed when the signal lands inside C code (inside TensorFlow's tracing it surfaced as a
        # SystemError): whatever arrives after the signal, the signal is what ended the stage.
        print(f"terminated ({signal.Signals(received[0]).name})", file=sys.stderr)
        raise Terminated(128 + received[0]) from None
    finally:
        for signum, action in previous.items():
            signal.signal(signum, action)
