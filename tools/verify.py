"""Check that what a repository commits is reproducible: one command for its CI.

    python -m tools.verify [--repo DIR] [--outputs] [--rerun [STAGE] [--tolerance T] [--metrics-only]]

Every pipeline (each dvc.yaml and its dvc.lock) is checked. DIR (default: the current folder) may be any folder
inside the DVC project, which may itself be a sub-folder of a git repository (`dvc init --subdir`).

Default: is the committed dvc.lock up to date with dvc.yaml, the code, the params and the data dependencies?
No run, no DVC remote and no outputs needed (tools/lock_check.py lists what is compared). Each stale stage is
named with why: which file changed, which param key (old and new value), which stage it is downstream of.
`dvc status` cannot answer this alone in CI: without the outputs or a cache it reports them all as deleted.

--outputs      also: every output present in the working tree (after `dvc pull`) is the one dvc.lock records;
               a missing output is an error (pull it first).
--rerun [STAGE] also: `dvc repro` from scratch in a temporary clone of HEAD (own empty cache, no remote), then
               compare each output's hash with the committed dvc.lock and every number in metrics/**/*.json
               with the committed file, within --tolerance (default 1e-6: metrics are rounded to 6 decimals
               and the same platform must give the same numbers; across CPUs and GPUs use e.g. 0.01). With
               STAGE, only that stage and those it depends on (e.g. `--rerun evaluate`: the data and the head,
               not fine-tuning). It first says which stages it will run and roughly how long they take.
--metrics-only with --rerun: compare the metrics only (another platform cannot give the same output bytes).

Exit status: 0 up to date (it says what it checked), 1 stale or different (each stage, file, key, output and
metric named, and the command that fixes each), 2 bad usage or cannot check (not a DVC repository, unreadable
dvc.yaml, the rerun failed), 130 on Ctrl-C and 143 on SIGTERM (the rerun's clone and processes removed).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

from tools import lock_check, rerun_plan, verify_rerun
from transfer.core import signals

EVERY_STAGE = ""  # --rerun without a stage


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def uncommitted_locks(repo, root: Path) -> list[tuple[str, str]]:
    """(problem, fix) for each pipeline's dvc.lock that differs from HEAD's or is not in HEAD at all: the gate is
    about what is committed, whatever git's index holds (core.autostage stages a new lock)."""
    found = []
    for lock in sorted({Path(s.dvcfile.path).with_name("dvc.lock") for s in repo.index.stages if s.dvcfile}):
        if not lock.is_file():
            continue
        name = lock.relative_to(root).as_posix()
        if not _git(root, "ls-tree", "--name-only", "HEAD", "--", name).stdout.strip():
            found.append((f"{name} is not committed", f"git add {name} && git commit"))
        elif _git(root, "diff", "--quiet", "HEAD", "--", name).returncode == 1:
            found.append((f"{name} differs from the one committed at HEAD", f"git add {name} && git commit"))
    return found


def check_outputs(repo, root: Path) -> tuple[list[tuple[str, str]], int]:
    """Every output of every pipeline stage against its dvc.lock: ((problem, fix) list, outputs compared)."""
    from dvc.stage import PipelineStage

    problems, count = [], 0
    for stage in (s for s in repo.index.stages if isinstance(s, PipelineStage)):
        lock = lock_check._load_lock(Path(stage.dvcfile.path).with_name("dvc.lock")).get(stage.name) or {}
        recorded = lock_check._by_path(lock.get("outs"))
        name = lock_check.stage_name(stage, root)
        for out in stage.outs:
            if out.def_path not in recorded:
                continue  # reported by the lock check
            old = lock_check._recorded(recorded[out.def_path])
            if lock_check.dangling(out.fs_path):
                continue  # noted by the lock check
            if not out.exists:
                problems.append((f"{name}: output {out.def_path} is missing", f"dvc pull {name}"))
                continue
            count += 1
            now = out.get_hash().value
            if now != old:
                what = f"{name}: output {out.def_path} is not what dvc.lock records (md5 {old} in dvc.lock, {now} here)"
                problems.append((what, f"dvc checkout {name}" if out.use_cache else f"git checkout -- {out.def_path}"))
    return problems, count


def project_root(start: Path) -> Path | None:
    """The DVC project holding start: the nearest folder at or above it with a .dvc/ folder."""
    start = start.resolve()
    return next((folder for folder in (start, *start.parents) if (folder / ".dvc").is_dir()), None)


def _open_repo(root: Path):
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        repo = Repo(str(root))
        list(repo.index.stages)  # parse every dvc.yaml now, so that an error is reported here
        return repo
    except DvcException as error:
        raise SystemExit(f"verify: cannot check {root}: {error}") from None


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text!r}")
    return value


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.verify", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path("."), help="the DVC project (default: the current folder)")
    parser.add_argument("--outputs", action="store_true", help="also compare the outputs present with dvc.lock")
    parser.add_argument(
        "--rerun",
        nargs="?",
        const=EVERY_STAGE,
        metavar="STAGE",
        help="also reproduce from scratch in a clone of HEAD: every stage, or STAGE and the stages it depends on",
    )
    parser.add_argument(
        "--tolerance",
        type=_tolerance,
        default=verify_rerun.DEFAULT_TOLERANCE,
        help="--rerun: largest absolute difference allowed per metric (default %(default)g)",
    )
    parser.add_argument("--metrics-only", action="store_true", help="--rerun: compare metrics, not output hashes")
    args = parser.parse_args(argv)
    if (args.metrics_only or args.tolerance != verify_rerun.DEFAULT_TOLERANCE) and args.rerun is None:
        parser.error("--tolerance and --metrics-only go with --rerun")
    if not args.repo.is_dir():
        parser.error(f"--repo {args.repo}: no such folder")
    return args


def stale_fix(stage: str) -> str:
    """The command that brings a stale stage up to date: `dvc repro` for the top dvc.yaml, else its file."""
    target = stage.split(":")[0] if ":" in stage else ""
    return f"dvc repro {target}".strip() + " && git commit -a (dvc.lock and the outputs kept in git)"


def check(args: argparse.Namespace) -> int:
    root = project_root(args.repo)
    if root is None:
        print(f"verify: {args.repo.resolve()} is not in a DVC project (no .dvc/ folder here or above)", file=sys.stderr)
        return 2
    try:
        repo = _open_repo(root)
    except SystemExit as error:
        print(error, file=sys.stderr)
        return 2
    problems: list[tuple[str, str]] = []
    with repo:
        found = lock_check.check(repo)
        for stage, reasons in found.problems.items():
            problems += [(f"{stage}: {reason}", stale_fix(stage)) for reason in reasons]
        problems += [(problem, f"{fix} && git commit") for problem, fix in found.uncommitted]
        outputs_checked = 0
        if args.outputs:
            output_problems, outputs_checked = check_outputs(repo, root)
            problems += output_problems
        problems += uncommitted_locks(repo, root)
        if args.rerun is not None:
            try:
                stages = rerun_plan.stages_to_run(repo, args.rerun or None)
            except Exception as error:  # DVC's own error for a stage it does not know
                print(f"verify: --rerun {args.rerun}: {error}", file=sys.stderr)
                return 2
            lock = lock_check._load_lock(root / "dvc.lock")
            print(f"verify: --rerun {rerun_plan.describe(root, lock, stages)}", flush=True)
    if args.rerun is not None:
        try:
            differences = verify_rerun.rerun(root, args.tolerance, not args.metrics_only, target=args.rerun or None)
        except verify_rerun.CannotRerun as error:
            print(f"verify: cannot check: the rerun failed: {error}", file=sys.stderr)
            return 2
        fix = "not a command: the pipeline does not reproduce here (docs/reproducibility.md)"
        problems += [(f"rerun: {difference}", fix) for difference in differences]
    for note in found.notes:
        print(f"verify: note: {note}")
    if problems:
        stale = sorted(found.problems)
        head = f"verify: FAILED: {len(problems)} problem(s)"
        print(head + (f"; stale stage(s): {', '.join(stale)}" if stale else ""), file=sys.stderr)
        for problem, _ in problems:
            print(f"  - {problem}", file=sys.stderr)
        print("  To fix:", file=sys.stderr)
        for fix in dict.fromkeys(fix for _, fix in problems):
            print(f"    {fix}", file=sys.stderr)
        return 1
    counts = found.counts
    done = [
        f"dvc.lock is up to date for {counts['stages']} stage(s): {counts['files']} dependency hashes, "
        f"{counts['params']} params and {counts['outputs']} outputs kept in git compared, commands and "
        "deps/params/outs lists match dvc.yaml"
    ]
    if args.outputs:
        done.append(f"{outputs_checked} outputs in the working tree match dvc.lock")
    if args.rerun is not None:
        what = "metrics" if args.metrics_only else "output hashes and metrics"
        scope = f" of {args.rerun} and the stages it depends on" if args.rerun else ""
        done.append(f"a rerun from scratch{scope} of HEAD gave the same {what} (tolerance {args.tolerance:g})")
    print("verify: OK: " + "; ".join(done))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)  # nonsense arguments end here (exit 2), before any work
    try:
        with signals.termination_cleans_up():  # SIGTERM/SIGHUP: the rerun's clone and processes go, then 143/129
            return check(args)
    except KeyboardInterrupt:
        print("verify: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
