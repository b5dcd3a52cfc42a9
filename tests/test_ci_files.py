"""The CI configuration: the GitHub workflow files pass the schema check .ci/run makes (and a typo fails it),
they keep the triggers, permissions and steps the README promises, and .ci/run lints with the pinned ruff."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from synthetic.repos import ROOT

WORKFLOWS = ROOT / ".github/workflows"


def check_jsonschema(*paths: Path) -> subprocess.CompletedProcess:
    """The command .ci/run runs: check-jsonschema with the GitHub-workflow schema it ships (no network)."""
    executable = Path(sys.executable).with_name("check-jsonschema")
    command = [str(executable), "--builtin-schema", "vendor.github-workflows", *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def load(name: str) -> dict:
    # YAML 1.1 reads the key `on` as True; GitHub reads it as "on".
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True)
    return workflow


def test_workflow_files_pass_the_github_workflow_schema():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [path.name for path in files] == ["report.yml", "reproducibility.yml", "test.yml"]
    result = check_jsonschema(*files)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "typo",
    [("runs-on:", "run-on:"), ("pull-requests: write", "pull-request: write"), ("timeout-minutes: 90", "timeout: 90")],
)
def test_a_typo_in_a_workflow_fails_the_schema_check(tmp_path, typo):
    text = (WORKFLOWS / "report.yml").read_text()
    assert typo[0] in text
    broken = tmp_path / "report.yml"
    broken.write_text(text.replace(typo[0], typo[1], 1))
    result = check_jsonschema(broken)
    assert result.returncode == 1, result.stdout
    assert "Schema validation errors were encountered" in result.stdout + result.stderr


def triggered(workflow: dict, event: str, branch: str = "main") -> bool:
    """Whether GitHub starts the workflow for `event` (on `branch`, for a push)."""
    trigger = workflow["on"].get(event, False)
    if trigger is False:
        return False
    return event != "push" or branch in ((trigger or {}).get("branches") or [branch])


CONTEXT = {"github.repository": "owner/repo", "github.event.pull_request.head.repo.full_name": "owner/repo"}


def runs(item: dict, event: str, context: dict | None = None) -> bool:
    """Whether a job or step with this `if:` runs for `event`: GitHub's expression, for the forms used here
    (`==` on contexts and strings, `||`, `&&`); an unknown context is an error, not a guess."""
    condition = item.get("if")
    if condition is None:
        return True
    values = {**CONTEXT, "github.event_name": event, **(context or {})}
    python = re.sub(r"github(?:\.[\w-]+)+", lambda m: repr(values[m.group(0)]), condition)
    return bool(eval(python.replace("||", " or ").replace("&&", " and "), {"__builtins__": {}}))


def installed_by_setup(option: str) -> str:
    """The requirements file `sh setup.sh OPTION` installs (a complete lock: uv's output includes no other file)."""
    script = (ROOT / "setup.sh").read_text()
    found = re.search(r'"\$\{1:-\}" = "' + re.escape(option) + r'" \]; then\s+requirements=(\S+)', script)
    assert found, f"setup.sh no longer reads {option}"
    return found.group(1)


def compiled_for() -> str:
    """The Python version the lock files are compiled for, as uv's header in requirements.txt records it."""
    return (ROOT / "requirements.txt").read_text().split("--python-version ")[1].split()[0]


def test_the_test_workflow_runs_ci_run_once_per_change_on_the_locks_python_with_its_pip_cache():
    workflow = load("test.yml")
    assert triggered(workflow, "pull_request") and triggered(workflow, "push", "main")
    assert not triggered(workflow, "push", "my-branch")  # a pull request's pushes are tested once, as the PR
    assert not any(value == "write" for value in workflow["permissions"].values())
    steps = workflow["jobs"]["test"]["steps"]
    python = next(step for step in steps if step.get("uses", "").startswith("actions/setup-python@"))
    # CI's Python is the one the lock files are compiled for.
    assert python["with"]["python-version"] == compiled_for() and python["with"]["cache"] == "pip"
    # The pip cache is keyed on the file .ci/run's `sh setup.sh --dev` installs, so a changed pin misses it.
    assert "sh setup.sh --dev" in (ROOT / ".ci/run").read_text()
    assert installed_by_setup("--dev") in python["with"]["cache-dependency-path"].split()
    script = ROOT / steps[-1]["run"]
    assert script == ROOT / ".ci/run" and script.stat().st_mode & 0o111  # executable, as the step calls it


def test_report_workflow_writes_only_the_comment_and_reports_only_on_pull_requests():
    workflow = load("report.yml")
    assert triggered(workflow, "pull_request") and triggered(workflow, "push", "main")
    # The only write permission is the one its comment step needs.
    writes = {name for name, value in workflow["permissions"].items() if value == "write"}
    steps = workflow["jobs"]["report"]["steps"]
    commenting = [step for step in steps if "gh pr comment" in step.get("run", "")]
    assert writes == {"pull-requests"} and len(commenting) == 1
    comment = commenting[0]
    assert "--edit-last --create-if-none" in comment["run"]  # one comment, updated by each push
    assert runs(comment, "pull_request") and not runs(
        comment, "pull_request", {"github.event.pull_request.head.repo.full_name": "fork/repo"}
    )  # a fork's read-only token cannot comment
    # tools.report diffs against the base commit, which a shallow checkout would not have.
    checkout = next(step for step in steps if step.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0
    report = next(step for step in steps if "python -m tools.report" in step.get("run", ""))
    assert "github.event.pull_request.base.sha" in yaml.safe_dump(report["env"])
    # On main's pushes only the cache is filled: no report, artifact or comment.
    on_push = [step.get("name", step.get("uses")) for step in steps if runs(step, "push")]
    assert not [step for step in on_push if "report" in str(step).lower() or "comment" in str(step).lower()]
    assert not any("upload-artifact" in str(step) for step in on_push)
    assert any("dvc repro" in step.get("run", "") for step in steps if runs(step, "push"))


def test_ci_run_lints_with_ruff_and_checks_the_workflow_schema():
    script = (ROOT / ".ci/run").read_text()
    for command in (
        "ruff check .",
        "ruff format --check .",
        "check-jsonschema --builtin-schema vendor.github-workflows",
    ):
        assert command in script
    # An explicit rule selection (not ruff's moving default) that catches what it should.
    assert "select" in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]


def ruff(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("ruff")), *args, "--config", str(ROOT / "pyproject.toml"), "."]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "code, rule",
    [
        ("import os\n", "F401"),  # pyflakes: unused import
        ("def f(x=[]):\n    return x\n", "B006"),  # bugbear: mutable default
        ("import sys\nimport os\n\nprint(os, sys)\n", "I001"),  # import order
    ],
)
def test_the_lint_gate_fails_on_a_real_problem(tmp_path, code, rule):
    (tmp_path / "bad.py").write_text(code)
    result = ruff("check", cwd=tmp_path)
    assert result.returncode == 1 and rule in result.stdout, result.stdout + result.stderr
    (tmp_path / "bad.py").write_text('"""Fine."""\n')
    assert ruff("check", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("name", ["report.yml", "reproducibility.yml", "test.yml"])
def test_no_workflow_runs_twice_for_one_pull_request(name):
    # A push to a pull request's branch triggers `push` and `pull_request` both, unless push is limited to main.
    triggers = load(name)["on"]
    if "pull_request" in triggers and "push" in triggers:
        assert (triggers["push"] or {}).get("branches") == ["main"], triggers


def matches(pattern: str, path: str) -> bool:
    """GitHub's hashFiles glob: `**` any depth, `*` within one folder."""
    regex = re.escape(pattern).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
    return re.fullmatch(regex, path) is not None


def tracked_files() -> list[str]:
    return subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()


def test_report_cache_key_changes_with_every_file_the_pipeline_depends_on_and_secrets_stay_in_one_step():
    steps = load("report.yml")["jobs"]["report"]["steps"]
    cache = next(step for step in steps if step.get("uses", "").startswith("actions/cache@"))
    globs = re.findall(r"'([^']+)'", cache["with"]["key"].split("hashFiles(")[1])
    # Every git-tracked dependency of every stage (code, dvc.yaml itself, params), and the lock: an edit to any
    # of them makes a new key, so a stale cache is never the only one restored for it.
    needed = {"dvc.lock", "dvc.yaml", "params.yaml"}
    files = tracked_files()
    for stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values():
        for dep in stage["deps"]:
            needed |= {f for f in files if f == dep or f.startswith(dep.rstrip("/") + "/")}
    uncovered = sorted(path for path in needed if not any(matches(glob, path) for glob in globs))
    assert not uncovered, f"the cache key ignores {uncovered}"
    with_secrets = [step["name"] for step in steps if "secrets." in yaml.safe_dump(step)]
    assert with_secrets == ["Bring the pipeline up to date"]
    assert "secrets." not in (WORKFLOWS / "report.yml").read_text().split("steps:")[0]


def test_the_cache_key_check_sees_a_missing_folder():
    assert matches("transfer/**", "transfer/core/params.py") and matches("dvc.lock", "dvc.lock")
    assert not matches("stages/**", "transfer/core/params.py") and not matches("transfer/*", "transfer/core/a.py")


def test_reproducibility_workflow_verifies_every_pull_request_and_reruns_on_schedule_and_by_hand():
    workflow = load("reproducibility.yml")
    jobs = workflow["jobs"]
    for event, expected in {
        "pull_request": ["verify"],
        "schedule": ["rerun"],
        "workflow_dispatch": ["rerun"],
    }.items():
        assert triggered(workflow, event)
        assert [name for name, job in jobs.items() if runs(job, event)] == expected, event
    assert not triggered(workflow, "push")
    assert not any(value == "write" for value in workflow["permissions"].values())
    assert "python -m tools.verify" in jobs["verify"]["steps"][-1]["run"]
    assert "python -m tools.verify --rerun" in jobs["rerun"]["steps"][-1]["run"]
    assert "secrets." not in (WORKFLOWS / "reproducibility.yml").read_text()
