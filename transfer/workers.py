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
    """In a worker: have the kernel kill this process when its parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def ignore_interrupts() -> None:
    """In a worker: Ctrl-C is for the parent, which stops the workers itself (no traceback from each worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def interrupts_held():
    """Start child processes with SIGINT blocked, so that a Ctrl-C during their start-up (before they can ignore
    it) cannot print a KeyboardInterrupt traceback from each of them; the parent gets its Ctrl-C afterwards."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Terminated(SystemExit):
    """SIGTERM, raised in the main thread so that `with` blocks and `finally` clauses clean up."""


@contextlib.contextmanager
def sigterm_cleans_up():
    """Turn SIGTERM (`kill PID`, a CI runner's timeout) into an exception with exit status 143, so that temporary
    output, shared memory and workers are removed as for Ctrl-C; a second SIGTERM ends the process at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        print("terminated (SIGTERM)", file=sys.stderr)
        raise Terminated(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
