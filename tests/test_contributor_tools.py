"""The contributor entry points: the pre-commit hooks, the Makefile's targets and the type check each catch what
they are for, with the tools pinned in .venv, and run the same commands as CI's .ci/run; the dev container is
the lock files' Python and sets up as the README does."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from synthetic.repos import ROOT

BIN = Path(sys.executable).parent


def hooks() -> dict[str, dict]:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    # Local hooks only: pre-commit would fetch any other hook repository from GitHub.
    assert [repo["repo"] for repo in config["repos"]] == ["local"]
    return {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}


def run_hook(hook: dict, *files: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run a hook as pre-commit does: its entry, from the repository root, with the staged files appended."""
    assert hook["language"] == "system"
    program, *args = shlex.split(hook["entry"])
    assert program.startswith(".venv/bin/"), "the hooks run the versions pinned in requirements-dev.txt"
    command = [str(BIN / Path(program).name), *args, *map(str, files)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_ruff_hooks_fail_on_a_lint_error_and_format_the_file(tmp_path):
    found = hooks()
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")
    assert run_hook(found["ruff-check"], bad, cwd=tmp_path).returncode == 1
    ugly = tmp_path / "ugly.py"
    ugly.write_text("x = {  'a':1 }\n")
    assert run_hook(found["ruff-format"], ugly, cwd=tmp_path).returncode == 0
    assert ugly.read_text() == 'x = {"a": 1}\n'  # changed: pre-commit then fails the commit, to be re-staged


def test_the_large_file_hook_refuses_a_staged_file_over_500_kib(tmp_path):
    hook = hooks()["check-added-large-files"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "small.csv").write_bytes(b"x" * 500 * 1024)
    (tmp_path / "features.npy").write_bytes(b"x" * (500 * 1024 + 1))
    subprocess.run(["git", "add", "small.csv", "features.npy"], cwd=tmp_path, check=True)
    assert run_hook(hook, Path("small.csv"), cwd=tmp_path).returncode == 0
    result = run_hook(hook, Path("small.csv"), Path("features.npy"), cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == "features.npy (501 KB) exceeds 500 KB.\n"


def ci_commands() -> set[str]:
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    return {line for line in lines if line}


def make_commands(target: str) -> list[str]:
    result = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize("target", ["setup", "lint", "typecheck", "lock-check", "test"])
def test_each_make_target_runs_what_ci_runs(target):
    commands = make_commands(target)
    assert commands and set(commands) <= ci_commands(), f"make {target}: {commands} differ from .ci/run"


@pytest.mark.e2e  # mypy over a file takes seconds
def test_the_type_check_fails_on_a_type_error(tmp_path):
    assert ".venv/bin/mypy" in ci_commands()
    (tmp_path / "wrong.py").write_text('def f(x: int) -> str:\n    return x\n\n\nf("a")\n')
    command = [str(BIN / "mypy"), "--config-file", str(ROOT / "pyproject.toml"), "--no-incremental", "wrong.py"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert 'Incompatible return value type (got "int", expected "str")' in result.stdout
    assert 'Argument 1 to "f" has incompatible type "str"; expected "int"' in result.stdout
