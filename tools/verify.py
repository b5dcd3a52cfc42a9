"""Check that what a repository commits is reproducible: one command for its CI.

    python -m tools.verify [--repo DIR] [--outputs] [--rerun [--tolerance T] [--metrics-only]]

Default: is the committed dvc.lock up to date with dvc.yaml, the code, the params and the data dependencies?
No run, no DVC remote and no outputs needed (tools/lock_check.py lists what is compared). Each stale stage is
named with why: which file changed, which param key (old and new value), which stage it is downstream of.
`dvc status` cannot answer this alone in CI: without the outputs or a cache it reports them all as deleted.

--outputs      also: every output present in the working tree (after `dvc pull`) is the one dvc.lock records;
               a missing output is an error (pull it first).
--rerun        also: `dvc repro` from scratch in a temporary clone of HEAD (own empty cache, no remote), then
               compare each output's hash with the committed dvc.lock and every number in metrics/**/*.json
               with the committed file, within --tolerance (default 1e-6: metrics are rounded to 6 decimals
               and the same platform must give the same numbers; across CPUs and GPUs use e.g. 0.01).
--metrics-only with --rerun: compare the metrics only (another platform cannot give the same output bytes).

Exit status: 0 up to date (it says what it checked), 1 stale or different (each stage, file, key, output and
metric named), 2 bad usage or cannot check (not a DVC repository, unreadable dvc.yaml, the rerun failed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from tools import lock_check, verify_rerun


def _git_dirty_lock(root: Path) -> bool:
    result = subprocess.run(
        ["git", "diff", "--quiet", "HEAD", "--", "dvc.lock"], cwd=root, capture_output=True, text=True
    )
    return result.returncode == 1


def check_outputs(repo, root: Path) -> tuple[list[str], int]:
    """Every output of every pipeline stage against dvc.lock: (problems, outputs compared)."""
    from dvc.stage import PipelineStage

    problems, count = [], 0
    for stage in (s for s in repo.index.stages if isinstance(s, PipelineStage)):
        lock = lock_check._load_lock(Path(stage.dvcfile.path).with_name("dvc.lock")).get(stage.name) or {}
        recorded = lock_check._by_path(lock.get("outs"))
        for out in stage.outs:
            if out.def_path not in recorded:
                continue  # reported by the lock check
            old = lock_check._recorded(recorded[out.def_path])
            if not out.exists:
                problems.append(
                    f"{lock_check.stage_name(stage, root)}: output {out.def_path} is missing (run `dvc pull` first)"
                )
                continue
            count += 1
            now = out.get_hash().value
            if now != old:
                problems.append(
                    f"{lock_check.stage_name(stage, root)}: output {out.def_path} is not what dvc.lock records "
                    f"(md5 {old} in dvc.lock, {now} here)"
                )
    return problems, count


def _open_repo(root: Path):
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        repo = Repo(str(root))
        list(repo.index.stages)  # parse every dvc.yaml now, so that an error is reported here
        return repo
    except DvcException as error:
        raise SystemExit(f"verify: cannot check {root}: {error}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path("."), help="the repository (default: the current folder)")
    parser.add_argument("--outputs", action="store_true", help="also compare the outputs present with dvc.lock")
    parser.add_argument("--rerun", action="store_true", help="also reproduce from scratch in a clone of HEAD")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=verify_rerun.DEFAULT_TOLERANCE,
        help="--rerun: largest absolute difference allowed per metric (default %(default)g)",
    )
    parser.add_argument("--metrics-only", action="store_true", help="--rerun: compare metrics, not output hashes")
    args = parser.parse_args(argv)
    if (args.metrics_only or args.tolerance != verify_rerun.DEFAULT_TOLERANCE) and not args.rerun:
        parser.error("--tolerance and --metrics-only go with --rerun")
    if args.tolerance < 0:
        parser.error("--tolerance must be >= 0")
    root = args.repo.resolve()
    if not (root / ".dvc").is_dir():
        print(f"verify: {root} is not a DVC repository (no .dvc/ folder)", file=sys.stderr)
        return 2
    try:
        repo = _open_repo(root)
    except SystemExit as error:
        print(error, file=sys.stderr)
        return 2
    with repo:
        found = lock_check.check(repo)
        outputs_checked = 0
        problems = [f"{stage}: {reason}" for stage, reasons in found.problems.items() for reason in reasons]
        if args.outputs:
            output_problems, outputs_checked = check_outputs(repo, root)
            problems += output_problems
    if args.rerun:
        try:
            problems += [f"rerun: {p}" for p in verify_rerun.rerun(root, args.tolerance, not args.metrics_only)]
        except verify_rerun.CannotRerun as error:
            print(f"verify: cannot check: the rerun failed: {error}", file=sys.stderr)
            return 2
    if _git_dirty_lock(root):  # the gate is about what is committed, whatever git's index holds (autostage)
        problems.append("dvc.lock differs from the one committed at HEAD: commit it")
    for note in found.notes:
        print(f"verify: note: {note}")
    if problems:
        stale = sorted(found.problems)
        head = f"verify: FAILED: {len(problems)} problem(s)"
        print(head + (f"; stale stage(s): {', '.join(stale)}" if stale else ""), file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        print(
            "  Run `dvc repro` (`dvc repro PATH/dvc.yaml` for a stage of another dvc.yaml), then commit the dvc.lock "
            "files and the outputs kept in git.",
            file=sys.stderr,
        )
        return 1
    counts = found.counts
    done = [
        f"dvc.lock is up to date for {counts['stages']} stage(s): {counts['files']} dependency hashes, "
        f"{counts['params']} params and {counts['outputs']} outputs kept in git compared, commands and "
        "deps/params/outs lists match dvc.yaml"
    ]
    if args.outputs:
        done.append(f"{outputs_checked} outputs in the working tree match dvc.lock")
    if args.rerun:
        what = "metrics" if args.metrics_only else "output hashes and metrics"
        done.append(f"a rerun from scratch of HEAD gave the same {what} (tolerance {args.tolerance:g})")
    print("verify: OK: " + "; ".join(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
