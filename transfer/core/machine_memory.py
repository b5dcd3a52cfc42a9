"""How much memory this process may still use: the machine's available memory (psutil), and the tightest cgroup
limit above this process (v2 or v1), which psutil does not read.

Shared by the stages that check their peak before they spend it: features (transfer/features/memory.py), train
(transfer/head/memory.py) and finetune (transfer/finetune/memory.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import psutil

GIB, MIB = 2**30, 2**20
UNLIMITED = 2**60  # cgroup v1 writes "no limit" as 9223372036854771712
# psutil's `available` is MemAvailable from /proc/meminfo on Linux.
MACHINE = "MemAvailable in /proc/meminfo" if sys.platform == "linux" else "the memory the system reports available"


def _read_int(path: Path, key: str | None = None) -> int | None:
    """An integer file (None for "max"), or the `key value` line of a stat file."""
    try:
        text = path.read_text()
    except OSError:
        return None
    if key is not None:
        values = dict(line.split()[:2] for line in text.splitlines() if len(line.split()) >= 2)
        return int(values[key]) if key in values else None
    text = text.strip()
    return None if text == "max" else int(text)


def _cgroup_room(proc: Path, root: Path) -> tuple[int, str] | None:
    """Room left under the tightest memory limit of this process's cgroup and its ancestors (v2 or v1)."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: "0::/path"
            base, files = root, ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):  # v1: "4:memory:/path"
            base, files = root / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        # A container may see its own cgroup at the mount's root, not under the host's path: walk up to it.
        folder = base / path.strip("/")
        for candidate in [folder, *folder.parents]:
            if not candidate.is_relative_to(base):
                break
            limit = _read_int(candidate / files[0])
            if limit is None or limit >= UNLIMITED:
                continue
            used = (_read_int(candidate / files[1]) or 0) - (_read_int(candidate / "memory.stat", files[2]) or 0)
            rooms.append((max(0, limit - used), f"the memory limit of cgroup {candidate} ({limit / GIB:.1f} GiB)"))
    return min(rooms) if rooms else None


def available_memory(proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> tuple[int, str]:
    """(bytes this process can still use, where that figure comes from): the lower of the machine's available
    memory and the room under this process's cgroup limit (`proc` holds self/cgroup)."""
    offers = [(psutil.virtual_memory().available, MACHINE)]
    room = _cgroup_room(proc, cgroup_root)
    if room is not None:
        offers.append(room)
    return min(offers)


def current_usage() -> int:
    """Resident memory of this process now, in bytes."""
    return psutil.Process().memory_info().rss
