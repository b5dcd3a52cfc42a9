"""The CI configuration: the GitHub workflow files pass the schema check .ci/run makes (and a typo fails it),
they keep the triggers, permissions and steps the README promises, and .ci/run lints with the pinned ruff."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tools.scratch_repo import ROOT

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


def test_test_workflow_runs_ci_run_on_python_311_with_the_pip_cache():
    workflow = load("test.yml")
    assert workflow["on"] == {"push": {"branches": ["main"]}, "pull_request": None}
    assert workflow["permissions"] == {"contents": "read"}
    steps = workflow["jobs"]["test"]["steps"]
    python = next(step for step in steps if step.get("uses", "").startswith("actions/setup-python@"))
    # CI's Python is the one the lock files are compiled for (requirements.in names it in its compile command).
    compiled_for = (ROOT / "requirements.in").read_text().split("--python-version ")[1].split()[0]
    assert python["with"]["python-version"] == compiled_for and python["with"]["cache"] == "pip"
    assert python["with"]["cache-dependency-path"].split() == ["requirements.txt", "requirements-dev.txt"]
    assert steps[-1]["run"] == ".ci/run"
    assert (ROOT / ".ci/run").stat().st_mode & 0o111  # executable, as the step calls it


def test_report_workflow_has_least_permissions_full_history_and_one_updated_comment():
    workflow = load("report.yml")
    assert workflow["on"] == {"pull_request": None, "push": {"branches": ["main"]}}
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write"}
    steps = workflow["jobs"]["report"]["steps"]
    checkout = next(step for step in steps if step.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0
    named = {step["name"]: step for step in steps if "name" in step}
    assert "secrets.DVC_REMOTE_URL" in named["Bring the pipeline up to date"]["env"]["DVC_REMOTE_URL"]
    report = named["Report"]
    assert report["env"]["BASE_SHA"] == "${{ github.event.pull_request.base.sha }}"
    assert 'python -m tools.report "$BASE_SHA"' in report["run"]
    comment = named["Comment on the pull request"]
    assert "--edit-last --create-if-none" in comment["run"] and comment["env"]["GH_TOKEN"] == "${{ github.token }}"


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


def test_report_cache_is_keyed_on_lock_params_and_stage_code_and_secrets_stay_in_one_step():
    text = (WORKFLOWS / "report.yml").read_text()
    steps = load("report.yml")["jobs"]["report"]["steps"]
    cache = next(step for step in steps if step.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["key"] == (
        "dvc-${{ hashFiles('dvc.lock', 'params.yaml', 'dvc.yaml', 'stages/**', 'transfer/**') }}"
    )
    with_secrets = [step["name"] for step in steps if "secrets." in yaml.safe_dump(step)]
    assert with_secrets == ["Bring the pipeline up to date"] and "secrets." not in text.split("steps:")[0]
    for step in steps:  # on main's pushes only the cache is filled: no report, no comment
        if step.get("name") in ("Report", "Comment on the pull request") or "upload-artifact" in step.get("uses", ""):
            assert step["if"].startswith("github.event_name == 'pull_request'")


def test_reproducibility_workflow_verifies_every_pull_request_and_reruns_on_schedule_and_by_hand():
    workflow = load("reproducibility.yml")
    assert set(workflow["on"]) == {"pull_request", "schedule", "workflow_dispatch"}
    assert workflow["permissions"] == {"contents": "read"}
    verify, rerun = workflow["jobs"]["verify"], workflow["jobs"]["rerun"]
    assert verify["if"] == "github.event_name == 'pull_request'"
    assert rerun["if"] == "github.event_name == 'schedule' || github.event_name == 'workflow_dispatch'"
    assert verify["steps"][-1]["run"].rstrip().endswith("python -m tools.verify")
    assert "python -m tools.verify --rerun $EXTRA" in rerun["steps"][-1]["run"]
    assert "secrets." not in (WORKFLOWS / "reproducibility.yml").read_text()
