"""tools/verify.py --rerun: reproduce the committed pipeline from scratch in a temporary clone of HEAD and compare
with what is committed: each output's hash in the new dvc.lock against the committed dvc.lock, and every number in
the JSON files under metrics/ against the committed ones, within a tolerance."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from tools.scratch_repo import CommandFailed, dvc, run

# Metrics are written rounded to 6 decimals (transfer/core/files.py write_json). On one platform a rerun gives the same
# bytes, so the same numbers; 1e-6 only forgives a last-digit rounding flip. Across CPUs/GPUs float results differ
# in the last bits, and mixed precision on a GPU more: pass a larger --tolerance there (docs/reproducibility.md).
DEFAULT_TOLERANCE = 1e-6


class CannotRerun(RuntimeError):
    """The clone or `dvc repro` failed: nothing could be compared."""


def _outs(lock: dict) -> dict[str, str]:
    """{output path: hash} over every stage of a dvc.lock."""
    found = {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            found[out["path"]] = out.get("md5") or out.get("etag") or out.get("checksum")
    return found


def _numbers(value: object, prefix: str = "") -> dict[str, float]:
    if isinstance(value, dict):
        return {
            k: v for key, item in value.items() for k, v in _numbers(item, f"{prefix}.{key}" if prefix else key).items()
        }
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _numbers(item, f"{prefix}[{i}]").items()}
    if isinstance(value, bool) or not isinstance(value, int | float):
        return {}
    return {prefix: float(value)}


def metrics_of(folder: Path) -> dict[str, dict[str, float]]:
    """{path relative to the repo: {metric: value}} for every JSON file under folder (metrics/)."""
    found = {}
    for path in sorted(Path(folder).rglob("*.json")):
        try:
            found[path.relative_to(folder.parent).as_posix()] = _numbers(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, UnicodeDecodeError):
            found[path.relative_to(folder.parent).as_posix()] = {}
    return found


def compare_metrics(committed: dict, rerun: dict, tolerance: float) -> list[str]:
    problems = []
    for path in sorted(set(committed) | set(rerun)):
        if path not in rerun or path not in committed:
            problems.append(f"{path}: {'not made by the rerun' if path not in rerun else 'not committed'}")
            continue
        old, new = committed[path], rerun[path]
        for key in sorted(set(old) | set(new)):
            a, b = old.get(key), new.get(key)
            if a is None or b is None or not (abs(a - b) <= tolerance or (math.isnan(a) and math.isnan(b))):
                problems.append(f"{path}: {key} committed {a!r}, rerun {b!r} (tolerance {tolerance:g})")
    return problems


def compare_outputs(committed: dict, rerun: dict) -> list[str]:
    old, new = _outs(committed), _outs(rerun)
    return [
        f"{path}: committed md5 {old.get(path)}, rerun md5 {new.get(path)}"
        for path in sorted(set(old) | set(new))
        if old.get(path) != new.get(path)
    ]


def rerun(root: Path, tolerance: float, outputs: bool = True, workdir: Path | None = None) -> list[str]:
    """Clone HEAD of the repository at root, `dvc repro` it from scratch, return the differences."""
    work = Path(workdir or tempfile.mkdtemp(prefix="verify-rerun-"))
    clone = work / "clone"
    try:
        try:
            run(work, "git", "clone", "-q", "--no-hardlinks", str(root), str(clone))
            committed_lock = yaml.safe_load((clone / "dvc.lock").read_text(encoding="utf-8")) or {}
            committed_metrics = metrics_of(clone / "metrics")
            # An empty cache of its own (nothing restored from the user's run-cache), no remote used.
            dvc(clone, "config", "--local", "cache.dir", str(work / "cache"))
            print(f"verify: dvc repro from scratch in {clone} ...", flush=True)
            dvc(clone, "repro", "--force", timeout=24 * 3600)  # --force: outputs kept in git are there already
        except (CommandFailed, subprocess.TimeoutExpired, OSError) as error:
            raise CannotRerun(str(error)) from error
        rerun_lock = yaml.safe_load((clone / "dvc.lock").read_text(encoding="utf-8")) or {}
        problems = compare_outputs(committed_lock, rerun_lock) if outputs else []
        return problems + compare_metrics(committed_metrics, metrics_of(clone / "metrics"), tolerance)
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)
