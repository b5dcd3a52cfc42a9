"""How much memory this process may still use: MemAvailable, and the tightest cgroup limit above it (v2 or v1).

Shared by the stages that check their peak before they spend it: features (transfer/features/memory.py), train
(transfer/head/memory.py) and finetune (transfer/finetune/memory.py).
"""

from __future__ import annotations

from pathlib import Path

GIB, MIB = 2**30, 2**20
UNLIMITED = 2**60  # cgroup v1 writes "no limit" as 9223372036854771712


def _meminfo(path: Path) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


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


def available_memory(proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> tuple[int, str] | None:
    """(bytes this process can still use, where that figure comes from), or None where Linux does not say."""
    offers = []
    free = _meminfo(proc / "meminfo")
    if free is not None:
        offers.append((free, "MemAvailable in /proc/meminfo"))
    room = _cgroup_room(proc, cgroup_root)
    if room is not None:
        offers.append(room)
    return min(offers) if offers else None


def current_usage() -> int:
    """Resident memory of this process now, in bytes (0 where Linux does not say)."""
    return (_read_int(Path("/proc/self/status"), "VmRSS:") or 0) * 1024
