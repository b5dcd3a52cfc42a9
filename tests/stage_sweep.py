"""The fault sweep's driver: every stage of every pipeline, run in this one process as `python -m stages.<name>` runs
it, in a prepared repository, three times each: normally (its outputs feed the next stage), then sent SIGTERM at its
first write into the repository (when its scratch output exists), then with the repository read-only; and once more
normally ("rerun") when the faults left its outputs removed (as the download stage empties data/raw first).

    python -m tests.stage_sweep REPO RESULTS.jsonl

The stages and their commands come from the pipeline files (each dvc.yaml, found by looking), so a new stage is
swept as it lands. One process imports Keras once for all of them (seconds, not a minute). Read-only is real: run
as root this process must be in its own mount namespace (`unshare -rm`), where the repository is bind-mounted
read-only for each such run; otherwise its folders lose their write permission. Each run appends one JSON line to
RESULTS: the stage, its outputs, the case, the exit status, what it printed, a traceback that escaped the stage
(None when none did), and the repository's files (path: size, mtime) before and after.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import shlex
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import yaml

from synthetic.repos import ROOT, pipeline_files

WRITES = (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC,)


def stage_commands(root: Path = ROOT) -> list[tuple[str, list[str], str, list[str]]]:
    """(name, arguments after `python -m`, working folder and outputs relative to the repository) of every stage,
    in file order, the main pipeline first."""
    found = []
    for pipeline in pipeline_files(root):
        stages = yaml.safe_load((root / pipeline).read_text(encoding="utf-8"))["stages"]
        for name, stage in stages.items():
            cmd = stage["cmd"] if isinstance(stage["cmd"], str) else " ".join(stage["cmd"])
            words = shlex.split(cmd)
            if words[:2] != ["python", "-m"] or not words[2].startswith("stages."):
                raise SystemExit(f"{pipeline}: stage {name}: cmd {cmd!r} is not `python -m stages.<name> ...`")
            wdir = os.path.normpath(Path(pipeline).parent / stage.get("wdir", "."))
            outs = [next(iter(out)) if isinstance(out, dict) else out for out in stage.get("outs", [])]
            found.append((name, words[2:], wdir, [os.path.normpath(Path(wdir) / out) for out in outs]))
    return found


def files(repo: Path) -> dict[str, list[int]]:
    return {
        str(path.relative_to(repo)): [path.lstat().st_size, path.lstat().st_mtime_ns]
        for path in sorted(repo.rglob("*"))
        if not path.is_dir() or path.is_symlink()
    } | {str(path.relative_to(repo)) + "/": [] for path in repo.rglob("*") if path.is_dir()}


def outputs(repo: Path, outs: list[str]) -> dict:
    """The files of a stage's outputs as they are now."""
    return {path: entry for path, entry in files(repo).items() if path.startswith(tuple(outs))}


class FirstWrite:
    """An audit hook that sends this process SIGTERM when it first opens a file for writing (or makes a link) in the
    repository: the moment a stage's scratch output exists. Armed for one run at a time."""

    def __init__(self, repo: Path):
        self.repo, self.armed, self.fired = str(repo) + os.sep, False, ""
        sys.addaudithook(self)

    def __call__(self, event: str, args: tuple) -> None:
        if not self.armed or event not in ("open", "os.symlink"):
            return
        path = args[0] if event == "open" else args[1]
        if not isinstance(path, (str, bytes, os.PathLike)):
            return
        if event == "open":
            mode, flags = args[1], args[2] or 0
            if not ((mode and any(c in mode for c in "wax+")) or flags & WRITES[0]):
                return
        full = os.path.abspath(os.fsdecode(path))
        if full.startswith(self.repo):
            self.armed, self.fired = False, full[len(self.repo) :]
            os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def read_only(repo: Path):
    if os.geteuid() == 0:  # in our own mount namespace (unshare -rm): the kernel refuses every write, EROFS
        subprocess.run(["mount", "--bind", str(repo), str(repo)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(repo), str(repo)], check=True)
        try:
            yield
        finally:
            subprocess.run(["umount", str(repo)], check=True)
        return
    folders = [repo, *(p for p in repo.rglob("*") if p.is_dir() and not p.is_symlink())]
    for folder in folders:
        folder.chmod(0o555)
    try:
        yield
    finally:
        for folder in folders:
            folder.chmod(0o755)


def run(repo: Path, name: str, args: list[str], wdir: str, outs: list[str], case: str, hook: FirstWrite) -> dict:
    before = files(repo)
    out, err = io.StringIO(), io.StringIO()
    code, uncaught = 0, None
    os.chdir(repo / wdir)
    sys.argv = [args[0], *args[1:]]
    hook.armed, hook.fired = case == "sigterm", ""
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_module(args[0], run_name="__main__", alter_sys=True)
    except SystemExit as exited:
        code = exited.code if isinstance(exited.code, int) else 1
    except BaseException:
        code, uncaught = -1, traceback.format_exc()
    finally:
        hook.armed = False
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(repo.parent)  # not inside the repository: its read-only mount must come off
    return dict(
        stage=name,
        case=case,
        outs=outs,
        code=code,
        stdout=out.getvalue(),
        stderr=err.getvalue(),
        uncaught=uncaught,
        first_write=hook.fired,
        before=before,
        after=files(repo),
    )


def main() -> None:
    repo, results = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    os.chdir(repo.parent)
    hook = FirstWrite(repo)
    with open(results, "a", encoding="utf-8") as log:
        for name, args, wdir, outs in stage_commands():
            made: dict = {}
            for case in ("normal", "sigterm", "read-only", "rerun"):
                if case == "rerun" and outputs(repo, outs) == made:
                    continue  # the faults left its outputs as they were: the stages after it read them
                with read_only(repo) if case == "read-only" else contextlib.nullcontext():
                    result = run(repo, name, args, wdir, outs, case, hook)
                log.write(json.dumps(result) + "\n")
                log.flush()
                if case in ("normal", "rerun") and result["code"] != 0:
                    return  # the stages after it have nothing to read
                made = outputs(repo, outs) if case == "normal" else made


if __name__ == "__main__":
    main()
