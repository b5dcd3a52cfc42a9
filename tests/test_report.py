"""The pull-request report (tools/report.py), the report workflow's commands, and the `classifier` artifact.

One module-scoped copy of the session's reproduced repository (tests/reproduced.py): `main` as reproduced, pushed to
a DVC remote of its own and tagged `classifier@v0.1.0`, then a branch `short` with train.epochs 30 -> 2 reproduced
(only the stages after the features rerun) and committed: the under-trained head moves some test predictions, so
the F1 table has rows.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from synthetic.repos import (
    ROOT,
    clone,
    commit_all,
    dvc,
    git,
    md5_of,
    read_params,
    run,
    stages_restored,
    stages_run,
    subprocess_env,
    write_params,
)
from tools import report as report_tool
from transfer.core.errors import StageError

REPORT_WORKFLOW = ROOT / ".github/workflows/report.yml"


@dataclass
class Project:
    repo: Path  # on branch `short`, committed, outputs present
    remote: Path  # local DVC remote holding both commits' outputs
    main_lock: dict  # main's dvc.lock


def report_cli(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(repo, sys.executable, "-m", "tools.report", *args, check=check)


def f1_by_class(text: str) -> dict[str, float]:
    return {row["class"]: float(row["f1"]) for row in csv.DictReader(text.splitlines())}


def section(markdown: str, title: str) -> str:
    """The text of one `### title` section."""
    return markdown.split(f"### {title}", 1)[1].split("\n### ", 1)[0]


@pytest.fixture(scope="module")
def project(reproduced, tmp_path_factory) -> Project:
    root = tmp_path_factory.mktemp("report")
    repo = reproduced.copy(root / "repo")
    remote = root / "remote"
    dvc(repo, "remote", "modify", "storage", "url", str(remote))  # not the session's shared remote
    commit_all(repo, "baseline")
    dvc(repo, "push")
    git(repo, "tag", "-a", "classifier@v0.1.0", "-m", "Registering artifact classifier version 0.1.0")
    main_lock = yaml.safe_load((repo / "dvc.lock").read_text())

    git(repo, "checkout", "-q", "-b", "short")
    params = read_params(repo)
    params["train"]["epochs"] = 2
    write_params(repo, params)
    dvc(repo, "repro")
    commit_all(repo, "train.epochs 2")
    dvc(repo, "push")
    return Project(repo, remote, main_lock)


# ------------------------------------------------------------------------------------------- the report


@pytest.mark.e2e
def test_report_shows_metrics_params_f1_changes_and_the_image(project):
    repo = project.repo
    markdown = report_cli(repo, "main").stdout
    head = git(repo, "rev-parse", "--short", "HEAD").stdout.strip()
    assert markdown.startswith("## DVC report\n")
    assert f"(HEAD `{head}`) against `main`" in markdown
    assert "Warning" not in markdown and "not committed" not in markdown  # committed and up to date

    metrics = section(markdown, "Metrics")
    rows = [line for line in metrics.splitlines() if line.startswith("| metrics/")]
    test_metrics = {line.split("|")[2].strip() for line in rows if line.startswith("| metrics/test.json")}
    # --all: every metric, changed or not.
    assert test_metrics == {"accuracy", "balanced_accuracy", "loss", "macro_f1", "n_test", "top5_accuracy"}
    assert any(line.startswith("| metrics/train/metrics.json") for line in rows)
    assert "| main" in metrics and "| workspace" in metrics

    params = section(markdown, "Params")
    (epochs,) = [line for line in params.splitlines() if "train.epochs" in line]
    assert [cell.strip() for cell in epochs.strip("|").split("|")] == ["params.yaml", "train.epochs", "30", "2"]
    assert "train.dropout" not in params  # unchanged params are left out

    old = f1_by_class(git(repo, "show", "main:metrics/per_class.csv").stdout)
    new = f1_by_class((repo / "metrics/per_class.csv").read_text())
    changed = {name for name in new if new[name] != old[name]}
    assert changed, "the fixture's epochs change no longer moves any class's F1; the F1 table goes untested"
    f1 = section(markdown, "Classes whose F1 changed most (top 10)")
    listed = {
        line.split("|")[1].strip(): line for line in f1.splitlines() if line.startswith("| ") and "---" not in line
    }
    listed.pop("class")  # the header
    assert set(listed) == changed
    for name, line in listed.items():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[1:4] == [f"{old[name]:.4f}", f"{new[name]:.4f}", f"{new[name] - old[name]:+.4f}"]
    changes = [abs(float(line.split("|")[4])) for line in listed.values()]  # in the report's order
    assert changes == sorted(changes, reverse=True)

    image = section(markdown, "Confusion matrix")
    assert "![Test confusion matrix, row-normalised](metrics/confusion_matrix.png)" in image
    assert (repo / "metrics/confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    losses = section(markdown, "Test images with the highest loss")
    assert "![Test images with the highest loss](metrics/top_losses.png)" in losses
    audit = section(markdown, "Data audit")
    assert "near-duplicate pairs" in audit and "![Near-duplicate pairs](metrics/audit/duplicates.png)" in audit
    assert any(line.startswith("| metrics/audit/summary.json") for line in rows)  # the audit's counts, diffed

    same = report_cli(repo, "short", "--top", "1").stdout
    assert "No parameter changed since `short`" in same
    assert "No class's F1 changed (5 classes)." in same


@pytest.mark.e2e
def test_dvc_metrics_and_params_diff_compare_the_two_commits(project):
    repo = project.repo
    old = json.loads(git(repo, "show", "main:metrics/test.json").stdout)
    new = json.loads((repo / "metrics/test.json").read_text())
    assert new["loss"] != old["loss"]

    diff = json.loads(dvc(repo, "metrics", "diff", "main", "short", "--json").stdout)
    changed = diff["metrics/test.json"]
    assert changed["loss"] == {"old": old["loss"], "new": new["loss"], "diff": pytest.approx(new["loss"] - old["loss"])}
    assert all(entry["old"] != entry["new"] for entry in changed.values())
    full = json.loads(dvc(repo, "metrics", "diff", "main", "short", "--all", "--json").stdout)
    accuracy = full["metrics/test.json"]["accuracy"]
    assert (accuracy["old"], accuracy["new"]) == (old["accuracy"], new["accuracy"])
    assert accuracy["diff"] == pytest.approx(new["accuracy"] - old["accuracy"])
    assert set(full["metrics/test.json"]) == set(old)
    assert {"metrics/train/metrics.json", "metrics/finetune/test.json", "metrics/audit/summary.json"} <= set(full)

    md = dvc(repo, "metrics", "diff", "main", "short", "--md").stdout
    assert md.lstrip().startswith("| Path") and "| main" in md and "| short" in md
    assert any(line.startswith("| metrics/test.json") and "| loss" in line for line in md.splitlines())

    params_diff = json.loads(dvc(repo, "params", "diff", "main", "short", "--json").stdout)
    assert params_diff == {"params.yaml": {"train.epochs": {"old": 30, "new": 2, "diff": -28}}}
    text = dvc(repo, "params", "diff", "main", "short", "--md").stdout
    line = next(line for line in text.splitlines() if "train.epochs" in line)
    assert "30" in line and "2" in line


@pytest.mark.e2e
def test_report_warns_when_the_pipeline_is_stale_or_outputs_uncommitted(project, tmp_path):
    repo = clone(project.repo, tmp_path / "clone")
    dvc(repo, "pull")
    dvc(repo, "repro", "source")  # data/source is per machine (not in git)
    params = read_params(repo)
    params["train"]["dropout"] = 0.7
    write_params(repo, params)
    stale = report_cli(repo, "origin/main").stdout
    assert "**Warning:** `dvc status` reports changed stages (train)" in stale
    assert "not committed" not in stale

    (repo / "metrics/per_class.csv").write_text("class,precision,recall,f1,support\n")
    uncommitted = report_cli(repo, "origin/main").stdout
    assert "**Note:** not committed: `metrics/per_class.csv`" in uncommitted


@pytest.mark.e2e
def test_report_fails_clearly_on_an_unknown_revision(project):
    result = report_cli(project.repo, "no-such-branch", check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert "error: unknown git revision 'no-such-branch'" in result.stderr
    assert "fetch-depth: 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_report_fails_clearly_without_metrics_or_git(tmp_path):
    with pytest.raises(StageError, match="not a git repository"):
        report_tool.report(tmp_path, "main")
    subprocess.run(["git", "init", "-q", "-b", "main", str(tmp_path)], check=True)
    (tmp_path / "a.txt").write_text("a\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", "a.txt"], check=True)
    subprocess.run(
        ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "a"], check=True
    )
    with pytest.raises(StageError, match=r"metrics/test.json not found: run `dvc repro`"):
        report_tool.report(tmp_path, "main")


def test_the_audit_section_states_the_counts_and_links_the_pictures(tmp_path):
    assert "run `dvc repro audit`" in "\n".join(report_tool.audit_section(tmp_path, None))
    folder = tmp_path / "metrics" / "audit"
    folder.mkdir(parents=True)
    duplicates = {"pairs": 5, "pairs_across_split": 3, "test_images_with_a_duplicate_outside_test": 2}
    summary = {"images": 120, "duplicates": duplicates, "label_issues": {"images": 4, "in_test": 1}}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "label_issues.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    text = "\n".join(report_tool.audit_section(tmp_path, None))
    assert "5 near-duplicate pairs, 3 across train/val/test (2 test images have a near-copy outside test)" in text
    assert "4 likely label errors (1 in test) among 120 images" in text
    assert "![Likely label errors](metrics/audit/label_issues.png)" in text
    assert "duplicates.png" not in text  # a picture that is not there is not linked


def test_f1_changes_orders_by_size_and_lists_added_and_removed_classes():
    old = {"cat": (0.5, 4), "dog": (0.9, 4), "eel": (1.0, 2), "gone": (0.3, 3)}
    new = {"cat": (0.7, 4), "dog": (0.5, 4), "eel": (1.0, 2), "new": (0.8, 5)}
    rows = report_tool.f1_changes(old, new, top=10)
    assert [row[0] for row in rows] == ["gone", "new", "dog", "cat"]  # one-sided first, then by |change|
    assert rows[0] == ("gone", 0.3, None, None, 3)
    assert rows[2][:3] == ("dog", 0.9, 0.5) and rows[2][3] == pytest.approx(-0.4)
    assert [row[0] for row in report_tool.f1_changes(old, new, top=3)] == ["gone", "new", "dog"]
    assert report_tool.f1_changes(old, old, top=10) == []


# ------------------------------------------------------------------------------------------- the workflow's steps


def workflow_step(name: str) -> dict:
    steps = yaml.safe_load(REPORT_WORKFLOW.read_text())["jobs"]["report"]["steps"]
    return next(step for step in steps if step.get("name") == name)


def run_step(repo: Path, name: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run a step's `run:` script with bash in repo, as the runner would (its ${{ }} values given in env)."""
    script = workflow_step(name)["run"]
    assert "${{" not in script  # expressions are passed through env:, so the script runs the same here
    return subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=repo,
        env={**subprocess_env(), **env},
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.e2e
def test_report_workflow_steps_pull_from_the_secret_remote_report_and_comment(project, tmp_path):
    repo = clone(project.repo, tmp_path / "pr")
    # The pull request's checkout knows no remote: the DVC_REMOTE_URL secret supplies it.
    dvc(repo, "remote", "remove", "storage")
    commit_all(repo, "no remote in .dvc/config")
    assert not (repo / "models/classifier.keras").exists()

    pulled = run_step(repo, "Bring the pipeline up to date", {"DVC_REMOTE_URL": str(project.remote)})
    assert pulled.returncode == 0, pulled.stderr[-4000:]
    log = pulled.stdout + pulled.stderr
    assert stages_run(log) == ["source"]  # data/source is made per machine (not in git); the rest was pulled
    assert md5_of(repo / "models/classifier.keras") == md5_of(project.repo / "models/classifier.keras")
    assert "ci" in dvc(repo, "remote", "list").stdout
    assert git(repo, "status", "--porcelain").stdout == ""  # the remote went to .dvc/config.local

    summary = tmp_path / "summary.md"
    base = git(repo, "rev-parse", "origin/main").stdout.strip()
    image_base = "https://github.com/o/r/raw/abc"
    env = {
        "BASE_SHA": base,
        "IMAGE_BASE": image_base,
        "RUN_URL": "https://github.com/o/r/actions/runs/1",
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    reported = run_step(repo, "Report", env)
    assert reported.returncode == 0, reported.stderr[-4000:]
    body = (repo / "report.md").read_text()
    assert body.startswith("## DVC report") and f"against `{base}`" in body
    assert f"![Test confusion matrix, row-normalised]({image_base}/metrics/confusion_matrix.png)" in body
    assert f"![Likely label errors]({image_base}/metrics/audit/label_issues.png)" in body
    assert "train.epochs" in body and "balanced_accuracy" in body
    assert body.rstrip().endswith("[the workflow run](https://github.com/o/r/actions/runs/1).")
    assert summary.read_text() == body

    # gh cannot reach GitHub from here: a stub on PATH records the command line the step runs.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "gh"
    stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/gh-args\n')
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    commented = run_step(
        repo,
        "Comment on the pull request",
        {"PR_NUMBER": "7", "GH_TOKEN": "x", "PATH": f"{bin_dir}{os.pathsep}{subprocess_env()['PATH']}"},
    )
    assert commented.returncode == 0, commented.stderr
    args = (tmp_path / "gh-args").read_text().split("\n")[:-1]
    assert args == ["pr", "comment", "7", "--edit-last", "--create-if-none", "--body-file", "report.md"]


@pytest.mark.e2e
def test_report_workflow_step_without_a_remote_runs_dvc_repro(project, tmp_path):
    repo = clone(project.repo, tmp_path / "pr")
    dvc(repo, "remote", "remove", "storage")
    # No remote, but DVC's cache kept from an earlier job (as actions/cache keeps it): `dvc repro` brings the
    # features back from its run-cache. (A whole run from scratch giving the same bytes: test_check_reproducible.)
    shutil.copytree(project.repo / ".dvc/cache", repo / ".dvc/cache", copy_function=os.link)
    result = run_step(repo, "Bring the pipeline up to date", {"DVC_REMOTE_URL": ""})
    assert result.returncode == 0, result.stderr[-4000:]
    log = result.stdout + result.stderr
    assert "No DVC remote configured: dvc repro runs the pipeline" in log
    assert {"download", "split", "features"} <= set(stages_restored(log)), log[-4000:]
    # The run-cache holds no stage with an output git keeps (extract's and train's metrics): those run. The
    # retrained head is byte-identical to the committed one, so evaluate's committed metrics stand.
    assert stages_run(log) == ["source", "extract", "train"]
    assert "Stage 'evaluate' didn't change" in log
    assert "export" not in log  # the workflow reproduces the metrics (`dvc repro evaluate audit`), not the classifier
    assert dvc(repo, "status", "--with-deps", "evaluate", "audit", "-q", check=False).returncode == 0


# ------------------------------------------------------------------------------------------- the artifact


def artifacts_get(repo: Path, *args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "dvc", "artifacts", "get", str(repo), *args]
    return subprocess.run(
        command, cwd=cwd, env={**subprocess_env(), **env}, capture_output=True, text=True, timeout=600
    )


@pytest.mark.e2e
def test_dvc_artifacts_get_fetches_the_tagged_classifier_from_the_remote(project, tmp_path):
    declared = yaml.safe_load((project.repo / "dvc.yaml").read_text())["artifacts"]["classifier"]
    assert declared["path"] == "models/classifier.keras" and declared["type"] == "model"
    assert declared["desc"] and declared["labels"]
    # The tag marks main's model; the branch checked out in the repository holds a different one.
    tagged_md5 = next(
        out["md5"] for out in project.main_lock["stages"]["export"]["outs"] if out["path"] == "models/classifier.keras"
    )
    assert md5_of(project.repo / "models/classifier.keras") != tagged_md5

    # Studio is skipped without a token; DVC_STUDIO_OFFLINE makes sure a token in the environment changes nothing.
    env = {"DVC_STUDIO_OFFLINE": "1", "DVC_STUDIO_TOKEN": "", "STUDIO_TOKEN": ""}
    for flags, folder in (((), "latest"), (("--rev", "v0.1.0"), "pinned")):
        out = tmp_path / folder
        out.mkdir()
        result = artifacts_get(project.repo, "classifier", "-o", str(out), *flags, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr[-4000:]
        assert [p.name for p in out.iterdir()] == ["classifier.keras"]
        assert md5_of(out / "classifier.keras") == tagged_md5

    missing = artifacts_get(
        project.repo, "classifier", "--rev", "v9.9.9", "-o", str(tmp_path / "none"), cwd=tmp_path, env=env
    )
    assert missing.returncode != 0 and not (tmp_path / "none").exists()
