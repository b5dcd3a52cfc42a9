"""The CI gates fail when they should: the workflow schema check .ci/run makes passes the workflows and fails on a
typo, the lint gate fails on real problems, and the report workflow's cache key follows every file the pipeline
depends on."""

from __future__ import annotations

import re
import subprocess
import sys
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
    [("runs-on:", "run-on:"), ("timeout-minutes: 90", "timeout: 90")],
)
def test_a_typo_in_a_workflow_fails_the_schema_check(tmp_path, typo):
    text = (WORKFLOWS / "report.yml").read_text()
    assert typo[0] in text
    broken = tmp_path / "report.yml"
    broken.write_text(text.replace(typo[0], typo[1], 1))
    result = check_jsonschema(broken)
    assert result.returncode == 1, result.stdout
    assert "Schema validation errors were encountered" in result.stdout + result.stderr


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
