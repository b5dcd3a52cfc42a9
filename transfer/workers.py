"""Worker processes that never outlive the process that started them, and the shared memory they write into.

Whatever ends the parent (an exception, Ctrl-C, SIGTERM, SIGKILL from the OOM killer), its workers exit: the
kernel sends them SIGKILL when the parent dies (Linux: PR_SET_PDEATHSIG), and each worker also sees the end of
its pipe to the parent close. Workers talk to the parent over pipes only: no multiprocessing queues, so no named
semaphores that a killed process group would leave in /dev/shm. Shared-memory segments are named
`dvc-transfer-<owner pid>-<random>`, so that a later run can remove those whose owner died (SIGKILL to a whole
process group kills the resource tracker too, and nothing else would unlink them).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import signal
import sys
import threading
from pathlib import Path

from transfer import interrupts

SHM = Path("/dev/shm")  # where Linux keeps shared memory
PREFIX = "dvc-transfer-"  # short: macOS allows 31 characters in a shared-memory name
_OWNED = re.compile(re.escape(PREFIX) + r"(\d+)-[0-9a-f]+$")
PR_SET_PDEATHSIG = 1


def segment_name() -> str:
    return f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_orphaned_segments(shm: Path = SHM) -> list[str]:
    """Unlink the shared-memory segments of this project whose owner process is gone; return their names."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(shm):
            match = _OWNED.match(entry.name)
            if match and not _alive(int(match.group(1))):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(entry.name)
    return removed


def die_with_parent(parent: int) -> None:
    """In a worker: have the kernel kill this process when its parent dies (strictly: when the parent's thread
    that started it ends, so start workers from the thread that keeps them); exit now if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


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
        interrupts.raise_or_defer(lambda: Terminated(128 + signum))

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
