"""tools/verify.py --rerun: reproduce every committed pipeline from scratch in a temporary clone of HEAD and compare
with what is committed: each output's hash in every new dvc.lock against the committed one, and every number in
the JSON files under metrics/ against the committed ones, within a tolerance. A project in a sub-folder of its git
repository is reproduced in that sub-folder of the clone. `dvc repro` runs in a process group of its own, so that
Ctrl-C or SIGTERM ends it and its stages before the clone is removed."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from tools.commands import CommandFailed, dvc, run, subprocess_env

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


def compare_outputs(committed: dict, rerun: dict, lock: str = "dvc.lock") -> list[str]:
    old, new = _outs(committed), _outs(rerun)
    where = "" if lock == "dvc.lock" else f"{lock}: "
    return [
        f"{where}{path}: committed md5 {old.get(path)}, rerun md5 {new.get(path)}"
        for path in sorted(set(old) | set(new))
        if old.get(path) != new.get(path)
    ]


def _locks(project: Path) -> dict[str, dict]:
    """{path relative to the project: parsed dvc.lock} for the lock of every dvc.yaml in the project."""
    found = {}
    for lock in sorted(project.rglob("dvc.lock")):
        if ".dvc" not in lock.relative_to(project).parts and (lock.parent / "dvc.yaml").is_file():
            found[lock.relative_to(project).as_posix()] = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    return found


def _repro(project: Path, timeout: float, target: str | None = None) -> None:
    """`dvc repro --force` of every pipeline (or of target and the stages it depends on) in a process group of its
    own; ended with its stages on any exception here (Ctrl-C, SIGTERM turned into an exception, a timeout)."""
    args = [sys.executable, "-m", "dvc", "repro", "--force", target or "--all-pipelines"]
    process = subprocess.Popen(
        args,
        cwd=project,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except BaseException:
        _end_group(process)
        raise
    if process.returncode != 0:
        raise CannotRerun(f"{' '.join(args[1:])} exited {process.returncode}\n{output[-6000:]}")


def _end_group(process: subprocess.Popen) -> None:
    for signum, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        with contextlib.suppress(ProcessLookupError):  # the stages' own workers may outlive the leader briefly
            os.killpg(process.pid, signal.SIGKILL)
        return


def rerun(
    root: Path, tolerance: float, outputs: bool = True, workdir: Path | None = None, target: str | None = None
) -> list[str]:
    """Clone HEAD of the git repository holding the DVC project at root, `dvc repro` every pipeline (or target and
    what it depends on) from scratch, return the differences. Stages not rerun keep their committed outputs, lock
    entries and metrics, so they compare equal."""
    work = Path(workdir or tempfile.mkdtemp(prefix="verify-rerun-"))
    clone = work / "clone"
    try:
        try:
            top = Path(run(root, "git", "rev-parse", "--show-toplevel").stdout.strip())
            run(work, "git", "clone", "-q", "--no-hardlinks", str(top), str(clone))
            project = clone / Path(root).resolve().relative_to(top.resolve())
            committed_locks = _locks(project)
            if not committed_locks:
                raise CannotRerun("no dvc.lock is committed: nothing to compare with")
            committed_metrics = metrics_of(project / "metrics")
            # An empty cache of its own (nothing restored from the user's run-cache), no remote used.
            dvc(project, "config", "--local", "cache.dir", str(work / "cache"))
            print(f"verify: dvc repro from scratch in {project} ...", flush=True)
            _repro(project, timeout=24 * 3600, target=target)  # --force: outputs kept in git are there already
        except (CommandFailed, subprocess.TimeoutExpired, OSError, ValueError) as error:
            raise CannotRerun(str(error)) from error
        rerun_locks = _locks(project)
        problems = []
        if outputs:
            for lock in sorted(set(committed_locks) | set(rerun_locks)):
                problems += compare_outputs(committed_locks.get(lock, {}), rerun_locks.get(lock, {}), lock)
        return problems + compare_metrics(committed_metrics, metrics_of(project / "metrics"), tolerance)
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)
