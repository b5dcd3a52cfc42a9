"""Is dvc.lock up to date with dvc.yaml, the code, the params and the data? Checked without running anything,
without a remote and without the outputs (tools/verify.py's default check).

For every stage of every dvc.yaml (templating and foreach resolved by DVC):
  * it is in dvc.lock, with the same command and the same lists of deps, params and outs;
  * each param it lists has the value dvc.lock records (each changed key named with both values);
  * each dependency no stage produces (code, data in git, a local file outside the repository) has the md5
    dvc.lock records; one tracked by a .dvc file is compared with that file's record, so no `dvc pull` is needed;
  * each dependency another stage produces has the hash that stage's own entry records (a stage rerun alone,
    or a lock edited by hand, leaves its consumers stale);
  * each output kept in git (`cache: false`, e.g. metrics/) is committed and has the md5 dvc.lock records; one
    git ignores (data/source, per machine) is compared where present and noted where not;
  * a stage downstream of a stale stage is stale too.
Dependencies on http(s) or cloud URLs are not checked (that needs the network) and are listed as such, as are
links to files that are not on this machine (DVC itself fails on them).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from transfer.core.redact import redact_text

MISSING = "(absent)"


@dataclass
class Findings:
    problems: dict[str, list[str]] = field(default_factory=dict)  # stage -> reasons
    notes: list[str] = field(default_factory=list)
    uncommitted: list[tuple[str, str]] = field(default_factory=list)  # (problem, the command that fixes it)
    counts: dict[str, int] = field(default_factory=lambda: {"stages": 0, "files": 0, "params": 0, "outputs": 0})

    def add(self, stage: str, reason: str) -> None:
        self.problems.setdefault(stage, []).append(reason)


def _load_lock(path: Path) -> dict:
    """dvc.lock's stages, read as DVC reads it (YAML 1.2: `1e-09` is a number, not a string as PyYAML has it)."""
    from dvc.utils.serialize import load_yaml

    if not path.is_file():
        return {}
    return (load_yaml(str(path)) or {}).get("stages") or {}


def stage_name(stage, root: Path) -> str:
    """`train` for a stage of the top dvc.yaml, `sub/dvc.yaml:train` for one in another."""
    dvcfile = Path(stage.dvcfile.path)
    return stage.name if dvcfile == root / "dvc.yaml" else f"{dvcfile.relative_to(root).as_posix()}:{stage.name}"


def _recorded(entry: dict | None) -> str | None:
    """The hash a dvc.lock dep/out entry records (md5; etag or checksum for cloud paths)."""
    entry = entry or {}
    return entry.get("md5") or entry.get("etag") or entry.get("checksum")


def _by_path(entries: list[dict] | None) -> dict[str, dict]:
    return {entry["path"]: entry for entry in entries or []}


def _leaves(value: object, prefix: str) -> Iterator[tuple[str, object]]:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, f"{prefix}.{key}")
    else:
        yield prefix, value


def param_changes(key: str, old: object, new: object) -> list[str]:
    """`train.dropout: 0.5 -> 0.3` for each leaf of a (possibly whole-section) param that differs; a URL is shown
    without its user info or query string (transfer/core/redact.py)."""
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        left, right = dict(_leaves(old, key)), dict(_leaves(new, key))
        return [
            redact_text(f"{name}: {left.get(name, MISSING)!r} -> {right.get(name, MISSING)!r}")
            for name in sorted(set(left) | set(right))
            if left.get(name, MISSING) != right.get(name, MISSING)
        ]
    return [redact_text(f"{key}: {old!r} -> {new!r}")]


def dangling(path: str) -> str | None:
    """Where a link at path points, if that is not on this machine (DVC fails hashing it); else None."""
    return os.readlink(path) if os.path.islink(path) and not os.path.exists(path) else None


def dangling_note(name: str, path: str, target: str) -> str:
    return (
        f"{name}: {path} not checked (a link to {target}, which is not on this machine; a committed data/source: "
        f"`git rm --cached {path}` and commit, docs/reproducibility.md)"
    )


def _is_local(out) -> bool:
    return out.protocol in ("local", "file")


def _within(path: str, out_path: str) -> bool:
    return path == out_path or path.startswith(out_path.rstrip("/") + "/")


def _dir_entry_md5(repo, dir_md5: str, relative: str) -> str | None:
    """The md5 of one file inside a directory output, from the .dir object in the local cache, if it is there."""
    from dvc_data.hashfile.tree import Tree

    try:
        tree = Tree.load(repo.cache.local, _HashInfo(dir_md5))
    except Exception:  # not in this cache: fine, the caller says it was not checked
        return None
    for key, _meta, hash_info in tree:
        if "/".join(key) == relative:
            return hash_info.value
    return None


def _HashInfo(value: str):  # noqa: N802 (a constructor)
    from dvc_data.hashfile.hash_info import HashInfo

    return HashInfo("md5", value)


def check(repo) -> Findings:
    """Compare every pipeline stage of the DVC repository `repo` (a dvc.repo.Repo) with its dvc.lock."""
    from dvc.dependency.param import ParamsDependency
    from dvc.stage import PipelineStage

    found = Findings()
    root = Path(repo.root_dir)
    all_stages = list(repo.index.stages)
    stages = [s for s in all_stages if isinstance(s, PipelineStage)]
    locks = {}
    for stage in stages:
        lock_path = Path(stage.dvcfile.path).with_name("dvc.lock")
        locks.setdefault(lock_path, _load_lock(lock_path))
    producers = [(s, out) for s in stages for out in s.outs]
    tracked = {out.fs_path: out for s in all_stages if not isinstance(s, PipelineStage) for out in s.outs}

    def lock_of(stage) -> dict | None:
        return locks[Path(stage.dvcfile.path).with_name("dvc.lock")].get(stage.name)

    for stage in list(stages):
        lock_path = Path(stage.dvcfile.path).with_name("dvc.lock")
        if lock_path != root / "dvc.lock" and not lock_path.is_file():
            # A pipeline in a sub-folder that was never run records nothing to check.
            found.notes.append(f"{stage_name(stage, root)}: not checked (no {lock_path.relative_to(root)}: never run)")
            stages.remove(stage)
    for stage in stages:
        found.counts["stages"] += 1
        name, entry = stage_name(stage, root), lock_of(stage)
        if entry is None:
            found.add(name, "not in dvc.lock: never run, or dvc.lock not committed after `dvc repro`")
            continue
        if entry.get("cmd") != stage.cmd:
            found.add(name, f"command changed: {entry.get('cmd')!r} in dvc.lock, {stage.cmd!r} in dvc.yaml")
        file_deps = [d for d in stage.deps if not isinstance(d, ParamsDependency)]
        locked_deps = _by_path(entry.get("deps"))
        for label, declared, locked in (
            ("dependency", {d.def_path for d in file_deps}, set(locked_deps)),
            ("output", {o.def_path for o in stage.outs}, {o["path"] for o in entry.get("outs") or []}),
        ):
            for path in sorted(declared - locked):
                found.add(name, f"{label} {path} added to dvc.yaml since the last run")
            for path in sorted(locked - declared):
                found.add(name, f"{label} {path} removed from dvc.yaml since the last run")
        for dep in file_deps:
            if dep.def_path in locked_deps:
                _check_dep(repo, found, name, dep, locked_deps[dep.def_path], producers, tracked, lock_of, root)
        _check_params(found, name, stage, entry)
        _check_git_outputs(found, name, stage, entry)
    _mark_downstream(found, stages, root)
    return found


def _check_dep(repo, found, name, dep, locked, producers, tracked, lock_of, root) -> None:
    path, old = dep.def_path, _recorded(locked)
    if not _is_local(dep):
        found.notes.append(f"{name}: {path} not checked ({dep.protocol}: it would need the network)")
        return
    producer = next(((s, o) for s, o in producers if _within(dep.fs_path, o.fs_path)), None)
    if producer is not None:
        stage, out = producer
        out_entry = _by_path((lock_of(stage) or {}).get("outs")).get(out.def_path)
        if out_entry is None:
            return  # the producing stage is reported itself
        made = _recorded(out_entry)
        if dep.fs_path != out.fs_path:  # a file inside a directory output
            made = _dir_entry_md5(repo, made, Path(dep.fs_path).relative_to(out.fs_path).as_posix())
            if made is None:
                if dep.exists:  # the outputs are here: hash the file itself
                    made = dep.get_hash().value
                else:
                    found.notes.append(f"{name}: {path} not checked by itself (inside {out.def_path}; no outputs)")
                    return
        found.counts["files"] += 1
        if made != old:
            found.add(name, f"{path} is not what stage {stage_name(stage, root)} made (md5 {old} here, {made} there)")
        return
    if dep.fs_path in tracked:  # data added with `dvc add`: its .dvc file holds the hash
        now = _recorded(tracked[dep.fs_path].hash_info.to_dict())
    elif target := dangling(dep.fs_path):
        found.notes.append(dangling_note(name, path, target))
        return
    elif dep.exists:
        now = dep.get_hash().value
    elif dep.is_in_repo:
        found.add(name, f"{path} was deleted (md5 {old} in dvc.lock)")
        return
    else:
        found.notes.append(f"{name}: {path} not checked (not on this machine)")
        return
    found.counts["files"] += 1
    if now != old:
        kind = "directory" if str(old).endswith(".dir") else "file"
        found.add(name, f"{path} changed ({kind} md5 {old} in dvc.lock, {now} now)")


def _check_params(found, name, stage, entry) -> None:
    from dvc.dependency.param import ParamsDependency

    locked = entry.get("params") or {}
    for dep in (d for d in stage.deps if isinstance(d, ParamsDependency)):
        old_values = locked.get(dep.def_path)
        current = dep.read_params() if dep.exists else {}
        if not dep.exists:
            found.add(name, f"params file {dep.def_path} is missing")
            continue
        keys = dep.params or sorted(set(current) | set(old_values or {}))
        for key in keys:
            found.counts["params"] += 1
            old = (old_values or {}).get(key, MISSING)
            new = current.get(key, MISSING)
            for change in param_changes(key, old, new):
                found.add(name, f"param {change} ({dep.def_path})")


def _git_tracked(root: Path, path: str) -> bool | None:
    """Whether git's HEAD holds path (a file, or files under a folder); None where git cannot say."""
    result = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", "HEAD", "--", path], cwd=root, capture_output=True, text=True
    )
    return bool(result.stdout.strip()) if result.returncode == 0 else None


def _git_ignored(root: Path, path: str) -> bool:
    return subprocess.run(["git", "check-ignore", "-q", path], cwd=root, capture_output=True).returncode == 0


def _check_git_outputs(found, name, stage, entry) -> None:
    """Outputs DVC does not cache: those kept in git (metrics/) must be committed and match dvc.lock; one git
    ignores (data/source, made per machine) is compared where it is present and noted where it is not."""
    locked = _by_path(entry.get("outs"))
    for out in stage.outs:
        if out.use_cache or out.def_path not in locked:
            continue
        folder = Path(stage.wdir)
        ignored = _git_ignored(folder, out.def_path)
        if not ignored and _git_tracked(folder, out.def_path) is False:
            path = Path(out.fs_path).relative_to(stage.repo.root_dir).as_posix()
            found.uncommitted.append((f"{name}: output {path} is in dvc.lock but not committed", f"git add {path}"))
            continue
        if target := dangling(out.fs_path):
            found.notes.append(dangling_note(name, out.def_path, target))
            continue
        if not out.exists:
            if ignored:
                found.notes.append(f"{name}: {out.def_path} not checked (not in this checkout; `dvc repro` makes it)")
            continue
        found.counts["outputs"] += 1
        old, now = _recorded(locked[out.def_path]), out.get_hash().value
        if old != now:
            where = "" if ignored else " (kept in git)"
            found.add(name, f"output {out.def_path}{where} is not what dvc.lock records (md5 {old}, now {now})")


def _mark_downstream(found, stages, root) -> None:
    """A stage that depends on an output of a stale stage is stale too (in pipeline order)."""
    changed = True
    while changed:
        changed = False
        for stage in stages:
            name = stage_name(stage, root)
            if name in found.problems:
                continue
            for upstream in stages:
                if stage_name(upstream, root) not in found.problems or upstream is stage:
                    continue
                if any(_within(d.fs_path, o.fs_path) for d in stage.deps for o in upstream.outs):
                    found.add(name, f"downstream of stale stage {stage_name(upstream, root)}")
                    changed = True
                    break
