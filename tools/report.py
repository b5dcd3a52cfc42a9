"""A Markdown report of what the working tree changes against a git revision: the pull-request comment.

    python -m tools.report BASE_REV [--repo DIR] [--top N] [--image-base URL]

Prints to stdout: `dvc metrics diff BASE_REV --all --md` (every metric of metrics/test.json,
metrics/train/metrics.json and the data audit's metrics/audit/summary.json, changed or not),
`dvc params diff BASE_REV --md`, the N classes whose F1 changed most (metrics/per_class.csv at BASE_REV, read
with `git show`, against the working tree), metrics/confusion_matrix.png and metrics/top_losses.png, and the data
audit (its counts, metrics/audit/duplicates.png and label_issues.png) as Markdown images. The same command runs on
a laptop and in .github/workflows/report.yml; it only reads git and the metrics files, so run `dvc repro` (or
`dvc pull`) first. Each image link is the file's path unless --image-base gives the URL the files are served from
(CI passes the repository's raw URL at the pull request's head commit, since a comment cannot embed a file from the
runner).
Exit status: 0 report printed, 1 a problem (unknown revision, no metrics, dvc failed), 2 bad usage.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

from transfer.core.cli import run
from transfer.core.errors import StageError
from transfer.core.redact import redact_text

TEST_METRICS = "metrics/test.json"
PER_CLASS = "metrics/per_class.csv"
CONFUSION_IMAGE = "metrics/confusion_matrix.png"
TOP_LOSSES_IMAGE = "metrics/top_losses.png"
AUDIT_SUMMARY = "metrics/audit/summary.json"
AUDIT_IMAGES = ("metrics/audit/duplicates.png", "metrics/audit/label_issues.png")


def _command(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=repo, capture_output=True, text=True)


def _dvc(repo: Path, *args: str) -> str:
    """stdout of `dvc ARGS` run with this interpreter's DVC; StageError with its message when it fails."""
    result = _command(repo, sys.executable, "-m", "dvc", *args)
    if result.returncode != 0:
        raise StageError(f"`dvc {' '.join(args)}` failed in {repo}:\n{(result.stderr or result.stdout).strip()}")
    return result.stdout


def _table_or(markdown: str, empty: str) -> str:
    """A table from `dvc ... --md`, or `empty` when it has no rows (dvc prints a bare header then)."""
    lines = markdown.strip().splitlines()
    return "\n".join(lines) if len(lines) > 2 else empty


def resolve_revision(repo: Path, rev: str) -> str:
    """The commit `rev` names; StageError when git does not know it (a shallow CI checkout, a typo)."""
    if _command(repo, "git", "rev-parse", "--git-dir").returncode != 0:
        raise StageError(f"{repo} is not a git repository; run the report from the project's checkout")
    result = _command(repo, "git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if result.returncode != 0:
        raise StageError(
            f"unknown git revision {rev!r} in {repo}: give a branch, tag or commit that exists here "
            "(in CI, check out with `fetch-depth: 0` so the base commit is present)"
        )
    return result.stdout.strip()


def file_at(repo: Path, rev: str, path: str) -> str | None:
    """The text of `path` committed at `rev`, or None when that commit does not hold it."""
    result = _command(repo, "git", "show", f"{rev}:{path}")
    return result.stdout if result.returncode == 0 else None


def read_f1(text: str) -> dict[str, tuple[float, int]]:
    """{class: (f1, support)} from a per_class.csv written by the evaluate stage."""
    return {row["class"]: (float(row["f1"]), int(row["support"])) for row in csv.DictReader(io.StringIO(text))}


def f1_changes(old: dict[str, tuple[float, int]], new: dict[str, tuple[float, int]], top: int) -> list[tuple]:
    """(class, old F1 or None, new F1 or None, change, support) for the `top` largest changes, largest first.

    A class present on one side only (a dataset change) counts as a change from or to nothing and is listed
    before the rest. Unchanged classes are left out; ties are broken by name so the order is stable.
    """
    rows = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name, (None, 0))[0], new.get(name, (None, 0))[0]
        if before == after:
            continue
        change = None if before is None or after is None else after - before
        support = new.get(name, old.get(name))[1]
        rows.append((name, before, after, change, support))
    rows.sort(key=lambda row: (row[3] is not None, -abs(row[3] or 0.0), row[0]))
    return rows[:top]


def _number(value: float | None, sign: bool = False) -> str:
    return "-" if value is None else f"{value:+.4f}" if sign else f"{value:.4f}"


def f1_section(repo: Path, base: str, top: int) -> list[str]:
    lines = [f"### Classes whose F1 changed most (top {top})", ""]
    old_text = file_at(repo, base, PER_CLASS)
    if old_text is None:
        return [*lines, f"`{PER_CLASS}` is not committed at `{base}`: nothing to compare per class.", ""]
    old, new = read_f1(old_text), read_f1((repo / PER_CLASS).read_text(encoding="utf-8"))
    rows = f1_changes(old, new, top)
    if not rows:
        return [*lines, f"No class's F1 changed ({len(new)} classes).", ""]
    lines += [f"| class | F1 `{base}` | F1 now | change | test images |", "|---|---:|---:|---:|---:|"]
    for name, before, after, change, support in rows:
        lines.append(f"| {name} | {_number(before)} | {_number(after)} | {_number(change, sign=True)} | {support} |")
    return [*lines, ""]


def image_lines(repo: Path, path: str, alt: str, image_base: str | None) -> list[str]:
    """A Markdown image of the file at `path`, linked under image_base when given, with a note when the working tree's
    file differs from the committed one that the link shows."""
    link = f"{image_base.rstrip('/')}/{path}" if image_base else path
    lines = [f"![{alt}]({link})", ""]
    if image_base and _command(repo, "git", "diff", "--quiet", "HEAD", "--", path).returncode != 0:
        lines += [f"The link shows the committed `{path}`; the one just reproduced differs from it.", ""]
    return lines


def image_section(repo: Path, image_base: str | None) -> list[str]:
    lines = []
    for title, path, alt, stage in (
        ("Confusion matrix", CONFUSION_IMAGE, "Test confusion matrix, row-normalised", "evaluate"),
        ("Test images with the highest loss", TOP_LOSSES_IMAGE, "Test images with the highest loss", "evaluate"),
    ):
        lines += [f"### {title}", ""]
        if (repo / path).is_file():
            lines += image_lines(repo, path, alt, image_base)
        else:
            lines += [f"`{path}` not found: run `dvc repro {stage}`.", ""]
    return lines


def audit_section(repo: Path, image_base: str | None) -> list[str]:
    """The data audit's counts in words and its two pictures (the counts are in the metrics table too)."""
    lines = ["### Data audit", ""]
    if not (repo / AUDIT_SUMMARY).is_file():
        return [*lines, f"`{AUDIT_SUMMARY}` not found: run `dvc repro audit`.", ""]
    summary = json.loads((repo / AUDIT_SUMMARY).read_text(encoding="utf-8"))
    pairs, errors = summary["duplicates"], summary["label_issues"]
    lines += [
        f"{pairs['pairs']} near-duplicate pairs, {pairs['pairs_across_split']} across train/val/test "
        f"({pairs['test_images_with_a_duplicate_outside_test']} test images have a near-copy outside test); "
        f"{errors['images']} likely label errors ({errors['in_test']} in test) among {summary['images']} images. "
        "The lists: `metrics/audit/duplicates.csv`, `metrics/audit/label_issues.csv`; what to do: docs/audit.md.",
        "",
    ]
    for path, alt in zip(AUDIT_IMAGES, ("Near-duplicate pairs", "Likely label errors"), strict=True):
        if (repo / path).is_file():
            lines += image_lines(repo, path, alt, image_base)
    return lines


def stale_notes(repo: Path) -> list[str]:
    """Warnings that the numbers below may not be what the commit claims: a stale pipeline, uncommitted outputs."""
    notes = []
    # The stages the metrics come from (evaluate and its upstream); the export is stale after any head change
    # until someone exports, which says nothing about the metrics.
    status_text = _dvc(repo, "status", "--with-deps", "evaluate", "audit", "--json")
    status = json.loads(status_text[status_text.index("{") :]) if "{" in status_text else {}
    if status:
        notes.append(
            f"> **Warning:** `dvc status` reports changed stages ({', '.join(sorted(status))}): "
            "the metrics below are not up to date; run `dvc repro`."
        )
    tracked = ("dvc.lock", "metrics/train/metrics.json", TEST_METRICS, PER_CLASS, CONFUSION_IMAGE, TOP_LOSSES_IMAGE)
    tracked += (AUDIT_SUMMARY, *AUDIT_IMAGES)
    changed = _command(repo, "git", "status", "--porcelain", "--", *tracked).stdout.splitlines()
    if changed:
        paths = ", ".join(f"`{line[3:]}`" for line in changed)
        notes.append(f"> **Note:** not committed: {paths} (the working tree's versions are reported).")
    return [*notes, ""] if notes else []


def report(repo: Path, base_rev: str, top: int = 10, image_base: str | None = None) -> str:
    repo = Path(repo).resolve()
    base_commit = resolve_revision(repo, base_rev)
    for path in (TEST_METRICS, PER_CLASS):
        if not (repo / path).is_file():
            raise StageError(f"{repo / path} not found: run `dvc repro` (or `dvc pull`) before the report")
    head = _command(repo, "git", "rev-parse", "--short", "HEAD").stdout.strip() or "no commit"
    lines = [
        "## DVC report",
        "",
        f"Working tree (HEAD `{head}`) against `{base_rev}` (`{base_commit[:7]}`).",
        "",
        *stale_notes(repo),
        "### Metrics",
        "",
        _table_or(_dvc(repo, "metrics", "diff", base_rev, "--all", "--md"), "No metrics found."),
        "",
        "### Params",
        "",
        # data.url without its user info or query string, as everywhere (transfer/core/redact.py).
        redact_text(
            _table_or(_dvc(repo, "params", "diff", base_rev, "--md"), f"No parameter changed since `{base_rev}`.")
        ),
        "",
        *f1_section(repo, base_rev, top),
        *image_section(repo, image_base),
        *audit_section(repo, image_base),
    ]
    return "\n".join(lines)


def main(base_rev: str, repo: Path, top: int, image_base: str | None) -> None:
    print(report(repo, base_rev, top, image_base))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_rev", help="the git revision to compare against (a branch, tag or commit)")
    parser.add_argument("--repo", type=Path, default=Path("."), help="the project's checkout (default: .)")
    parser.add_argument("--top", type=int, default=10, help="how many classes to list by F1 change (default 10)")
    parser.add_argument(
        "--image-base", help="the URL the metrics/ images are served from, + their paths (default: the paths alone)"
    )
    args = parser.parse_args()
    if args.top < 1:
        parser.error("--top must be at least 1")
    run(lambda: main(args.base_rev, args.repo, args.top, args.image_base))
