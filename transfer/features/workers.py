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
    """In a worker: have the kernel kill this process when its parent dies (strictly: when the parent's thread
    that started it ends, so start workers from the thread that keeps them); exit now if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
