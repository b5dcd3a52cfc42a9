"""Check that the pipeline is reproducible: same params, same bytes; a finished pipeline stays finished.

    python -m tests.check_reproducible [--workdir DIR] [--keep] [--gpu]

Builds a small generated archive (synthetic.datasets: 4 classes x 15 images, 32 px), then twice creates a fresh
git + DVC repository holding this checkout's pipeline (random-init backbone, image_size 32) and runs
`dvc repro` from scratch, with its own empty cache. It fails (exit status 1, naming each file) when:

  * a run's `dvc repro` fails, or `dvc status` is not clean after it;
  * a second `dvc repro` runs or restores any stage, or changes dvc.lock;
  * any output of any stage differs between the two runs: the split manifests, the feature arrays,
    metrics/*.json and every other file under a path dvc.yaml lists in `outs`, and dvc.lock itself.

Nothing is masked: `.keras` models are written byte-stable (transfer/artifacts/keras_files.py), so they and dvc.lock
are compared byte for byte like everything else; for a model that differs, the message names the zip member.
Runs on the CPU (GPUs are hidden unless --gpu); about 2 minutes on 2 CPU cores.
Exit status: 0 reproducible, 1 not (or a run failed), 2 bad usage.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from synthetic import repos as scratch_repo
from synthetic.datasets import make_archive


@dataclass
class RunReport:
    repo: Path
    seconds: float = 0.0
    stages: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- one run


def _output(result) -> str:
    return f"{result.stdout}\n{result.stderr}"


def _status(repo: Path) -> dict:
    result = scratch_repo.dvc(repo, "status", "--json", check=False)
    if result.returncode != 0:
        return {f"dvc status failed (exit {result.returncode})": result.stderr.strip()[-2000:]}
    text = result.stdout.strip()
    try:
        return json.loads(text[text.index("{") :]) if "{" in text else {"unparsed": text}
    except ValueError:
        return {"unparsed": text}


def reproduce(repo: Path, label: str = "run") -> RunReport:
    """`dvc repro` in repo, then check: every stage ran, `dvc status` is clean, a second `dvc repro` runs
    nothing and leaves dvc.lock byte-identical. Problems are collected in the report, not raised."""
    report = RunReport(Path(repo))
    start = time.perf_counter()
    try:
        first = scratch_repo.dvc(repo, "repro", "--all-pipelines")  # every dvc.yaml of the project
    except scratch_repo.CommandFailed as error:
        report.problems.append(f"{label}: dvc repro failed: {error}")
        return report
    report.seconds = time.perf_counter() - start
    report.stages = scratch_repo.stages_run(_output(first))
    missing = [s for s in scratch_repo.stage_names(repo, all_pipelines=True) if s not in report.stages]
    if missing:
        report.problems.append(f"{label}: the first dvc repro in a fresh repository did not run {', '.join(missing)}")

    status = _status(repo)
    if status:
        report.problems.append(f"{label}: dvc status is not clean after dvc repro: {json.dumps(status)}")

    lock = Path(repo) / "dvc.lock"
    before = lock.read_bytes() if lock.is_file() else b""
    if not before:
        report.problems.append(f"{label}: dvc repro wrote no dvc.lock")
    second = scratch_repo.dvc(repo, "repro", "--all-pipelines", check=False)
    if second.returncode != 0:
        report.problems.append(
            f"{label}: the second dvc repro failed (exit {second.returncode}): {second.stderr[-2000:]}"
        )
    again = scratch_repo.stages_run(_output(second)) + scratch_repo.stages_restored(_output(second))
    if again:
        report.problems.append(f"{label}: a second dvc repro reran stage(s) {', '.join(again)}")
    after = lock.read_bytes() if lock.is_file() else b""
    if after != before:
        diff = "".join(
            difflib.unified_diff(
                before.decode().splitlines(True),
                after.decode().splitlines(True),
                "dvc.lock (after first repro)",
                "dvc.lock (after second repro)",
                n=1,
            )
        )
        report.problems.append(f"{label}: dvc.lock changed on a second dvc repro:\n{diff[:3000]}")
    status = _status(repo)
    if status:
        report.problems.append(f"{label}: dvc status is not clean after a second dvc repro: {json.dumps(status)}")
    return report


# ---------------------------------------------------------------------------------------------- comparison


def keras_members_differing(a: Path, b: Path) -> str:
    """Which zip members of two .keras files differ (a diagnosis only: the files are compared byte for byte)."""
    try:
        with zipfile.ZipFile(a) as za, zipfile.ZipFile(b) as zb:
            names_a, names_b = za.namelist(), zb.namelist()
            if sorted(names_a) != sorted(names_b):
                return f"different members ({', '.join(sorted(set(names_a) ^ set(names_b)))})"
            differing = [name for name in names_a if za.read(name) != zb.read(name)]
    except (zipfile.BadZipFile, OSError) as error:
        return f"not readable as .keras archives ({error})"
    if differing:
        return "member(s) " + ", ".join(differing) + " differ"
    return "same members, different zip layout (entry order, times or compression)"


def _is_keras(path: str) -> bool:
    return str(path).endswith(".keras")


def compare_locks(a: Path, b: Path) -> list[str]:
    if not a.is_file() or not b.is_file():
        return [f"dvc.lock: missing in {'run 1' if not a.is_file() else 'run 2'}"]
    left, right = a.read_bytes(), b.read_bytes()
    if left == right:
        return []
    text_a, text_b = left.decode().splitlines(True), right.decode().splitlines(True)
    diff = "".join(difflib.unified_diff(text_a, text_b, "dvc.lock (run 1)", "dvc.lock (run 2)", n=2))
    return [f"dvc.lock differs between the runs:\n{diff[:4000]}"]


def declared_outputs(repo: Path) -> list[str]:
    """Every `outs` path of every stage of every dvc.yaml in repo, relative to repo (a stage's paths are its wdir's)."""
    paths = []
    for pipeline in scratch_repo.pipeline_files(Path(repo)):
        spec = yaml.safe_load((Path(repo) / pipeline).read_text(encoding="utf-8"))
        for stage in spec.get("stages", {}).values():
            base = Path(pipeline).parent / stage.get("wdir", ".")
            for out in stage.get("outs", []):
                paths.append(os.path.normpath(base / (next(iter(out)) if isinstance(out, dict) else out)))
    return paths


def output_files(repo: Path, outputs: list[str]) -> list[str]:
    """The files (relative to repo) under the given output paths."""
    repo = Path(repo)
    found = set()
    for out in outputs:
        path = repo / out
        if path.is_file():
            found.add(out)
        elif path.is_dir():
            found.update(p.relative_to(repo).as_posix() for p in path.rglob("*") if p.is_file())
    return sorted(found)


def _json_detail(a: Path, b: Path) -> str:
    """For small JSON files (metrics), the keys whose values differ."""
    try:
        left, right = json.loads(a.read_text()), json.loads(b.read_text())
    except (ValueError, UnicodeDecodeError, OSError):
        return ""
    if not isinstance(left, dict) or not isinstance(right, dict):
        return ""
    keys = sorted(k for k in set(left) | set(right) if left.get(k) != right.get(k))
    return ": " + ", ".join(f"{k} {left.get(k)!r} vs {right.get(k)!r}" for k in keys[:8]) if keys else ""


def compare_runs(a: Path, b: Path, outputs: list[str] | None = None, lock: bool = True) -> list[str]:
    """Compare two reproduced repositories; return one line per difference, naming the file.

    outputs: paths to compare (default: every `outs` path in a's dvc.yaml); lock: also compare dvc.lock.
    """
    a, b = Path(a), Path(b)
    outputs = declared_outputs(a) if outputs is None else outputs
    problems = []
    files_a, files_b = output_files(a, outputs), output_files(b, outputs)
    for only, where in ((set(files_a) - set(files_b), "run 1"), (set(files_b) - set(files_a), "run 2")):
        problems += [f"{path}: only in {where}" for path in sorted(only)]
    for path in sorted(set(files_a) & set(files_b)):
        left, right = a / path, b / path
        if left.read_bytes() == right.read_bytes():
            continue
        if _is_keras(path):
            problems.append(f"{path}: differs between the runs ({keras_members_differing(left, right)})")
        else:
            detail = _json_detail(left, right) if path.endswith(".json") else ""
            problems.append(f"{path}: differs between the runs{detail}")
    if lock:
        for pipeline in scratch_repo.pipeline_files(a):
            lockfile = Path(pipeline).with_name("dvc.lock")
            problems += compare_locks(a / lockfile, b / lockfile)
    return problems


# ---------------------------------------------------------------------------------------------- the check


def _summary(repo: Path, files: list[str]) -> str:
    """How many files each folder output holds, e.g. "data/split 3, data/features 7, ..., 9 other files"."""
    folders = [out for out in declared_outputs(repo) if (Path(repo) / out).is_dir()]
    counts = {out: sum(f.startswith(out + "/") for f in files) for out in folders}
    others = len(files) - sum(counts.values())
    return ", ".join([f"{out} {n}" for out, n in counts.items()] + [f"{others} other files"])


def check(workdir: Path, classes: int = 4, per_class: int = 15, image_px: int = 32) -> tuple[list[str], str]:
    """Run the whole check in workdir; return (problems, summary)."""
    archive = workdir / "101_ObjectCategories.tar.gz"
    make_archive(archive, layout="legacy", n_classes=classes, per_class=per_class, size=image_px)
    params = scratch_repo.small_params(str(archive), scratch_repo.md5_of(archive))
    # Both runs start from one snapshot of the checkout, so an edit made meanwhile cannot make them differ.
    pipeline = scratch_repo.copy_pipeline(workdir / "pipeline")
    reports = []
    for n in (1, 2):
        print(f"check_reproducible: run {n}: dvc repro in a fresh repository ({workdir / f'run{n}'})", flush=True)
        repo = scratch_repo.make_repo(workdir / f"run{n}", params, source=pipeline)
        reports.append(reproduce(repo, f"run {n}"))
    problems = [p for r in reports for p in r.problems]
    if any(not r.stages for r in reports):
        return problems, ""
    problems += compare_runs(reports[0].repo, reports[1].repo)
    files = output_files(reports[0].repo, declared_outputs(reports[0].repo))
    metrics = json.loads((reports[0].repo / "metrics" / "test.json").read_text())
    summary = "\n".join(
        [
            f"  runs: {len(reports[0].stages)} stages each, {reports[0].seconds:.0f} s and {reports[1].seconds:.0f} s; "
            "a second dvc repro ran nothing and left dvc.lock unchanged; dvc status clean",
            f"  identical byte for byte: {len(files)} output files ({_summary(reports[0].repo, files)}), "
            "the .keras models among them, and dvc.lock",
            "  metrics/test.json: " + ", ".join(f"{k} {v}" for k, v in metrics.items()),
        ]
    )
    return problems, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where to build the archive and the two repositories "
        "(default: a new temporary folder, deleted on success)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the working folder even on success")
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="let the stages use a GPU if there is one (by default "
        "the check hides GPUs: GPU runs use mixed precision and XLA and need not be bit-identical)",
    )
    args = parser.parse_args(argv)
    if not args.gpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"  # read by the stages through scratch_repo.subprocess_env()
    if args.workdir and args.workdir.exists() and any(args.workdir.iterdir()):
        parser.error(f"--workdir {args.workdir} is not empty")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="check-reproducible-"))
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        problems, summary = check(workdir.resolve())
    except scratch_repo.CommandFailed as error:
        problems, summary = [f"a command failed: {error}"], ""
    seconds = time.perf_counter() - start
    if problems:
        print(f"check_reproducible: FAILED after {seconds:.0f} s: {len(problems)} problem(s)", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        print(f"  (the runs are kept in {workdir})", file=sys.stderr)
        return 1
    print(f"check_reproducible: OK in {seconds:.0f} s: two fresh runs gave the same outputs\n{summary}")
    if not args.keep and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    elif args.keep:
        print(f"  (the runs are kept in {workdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
