"""Running git, dvc and Python commands for the project's tools and tests: this interpreter's bin/ first on PATH,
DVC's analytics off, and CommandFailed (with the command's output) on an unexpected exit status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


class CommandFailed(RuntimeError):
    """A command exited with an unexpected status; the message holds its stdout and stderr."""

    def __init__(self, args: tuple[str, ...], result: subprocess.CompletedProcess):
        self.result = result
        super().__init__(
            f"{' '.join(map(str, args))} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
        )


def subprocess_env() -> dict[str, str]:
    """The environment for `dvc` and `python -m stages...`: this interpreter's bin first on PATH, no analytics."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1")
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the stages choose their own log level: test what users get
    env.pop("PYTHONPATH", None)
    return env


def run(cwd: Path, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command in cwd, capturing its output; raise CommandFailed on a non-zero exit when check is set."""
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise CommandFailed(args, result)
    return result


def dvc(repo: Path, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    return run(repo, sys.executable, "-m", "dvc", *args, check=check, timeout=timeout)


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(repo, "git", *args, check=check)
