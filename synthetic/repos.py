"""Throwaway git + DVC repositories holding this project's pipeline, for tests and benchmarks.

make_repo() copies the pipeline files (dvc.yaml, params.yaml, stages/, transfer/, tools/, .gitignore) into a new folder,
writes the given params, runs `git init` and `dvc init` and commits. small_params() gives the params of the
small CPU runs: a local (or locally served) archive, the random-init backbone at 32 px, a short training.
run()/dvc()/git() (tools/commands.py, re-exported here) run commands with DVC's analytics off and this interpreter's
bin/ first on PATH, raising CommandFailed (with the command's output) on an unexpected exit status. Imports nothing
from tests/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import yaml

# The command runners, re-exported for the tests and benchmarks that build repositories here.
from tools.commands import CommandFailed as CommandFailed
from tools.commands import dvc as dvc
from tools.commands import git as git
from tools.commands import run as run
from tools.commands import subprocess_env as subprocess_env
from transfer.core.files import file_md5

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = (
    "dvc.yaml",
    "params.yaml",
    "requirements.txt",
    "stages",
    "transfer",
    "tools",
    ".gitignore",
    ".dvcignore",
)
# Folders that never hold a pipeline file of the project (outputs, environments, benchmark work).
_NOT_PIPELINES = {"data", "models", "metrics", "benchmarks", "tests", "synthetic", "__pycache__"}


def pipeline_files(root: Path = ROOT) -> tuple[str, ...]:
    """Every dvc.yaml of the project (POSIX paths relative to root), the top-level one first: what `dvc status`
    and `dvc checkout` look at, so what the project's checks cover (a dvc.yaml added in a sub-folder included)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _NOT_PIPELINES and "egg-info" not in d)
        if "dvc.yaml" in files:
            found.append((Path(folder) / "dvc.yaml").relative_to(root).as_posix())
    return tuple(sorted(found, key=lambda path: (path != "dvc.yaml", path)))


PIPELINE_FILES = pipeline_files()


md5_of = file_md5  # the name the tests and checks use


def dvc_status(repo: Path, *targets: str) -> dict:
    """`dvc status --json` (of targets, e.g. "train", when given) as a dict, {} when clean."""
    text = dvc(repo, "status", "--json", *targets).stdout.strip()
    return json.loads(text[text.index("{") :])


def small_params(url: str, md5: str | None, **overrides) -> dict:
    """params.yaml for small CPU runs: the given archive, random-init backbone at 32 px, small batches.

    overrides: {"train.dropout": 0.3, ...}.
    """
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["data"].update(url=url, md5=md5)
    params["features"].update(weights=None, image_size=32, batch_size=32)
    # Enough steps for the small head to learn the generated classes well above chance.
    params["train"].update(epochs=30, batch_size=16, learning_rate=0.003, hidden_units=128)
    params["finetune"].update(batch_size=8)  # epochs as params.yaml has it: 0, no fine-tuning
    for key, value in overrides.items():
        section, name = key.split(".")
        params[section][name] = value
    return params


def write_params(repo: Path, params: dict) -> None:
    (Path(repo) / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def read_params(repo: Path) -> dict:
    return yaml.safe_load((Path(repo) / "params.yaml").read_text(encoding="utf-8"))


def _configure_git(repo: Path) -> None:
    git(repo, "config", "user.email", "scratch@example.com")
    git(repo, "config", "user.name", "scratch")


def copy_pipeline(dest: Path, source: Path = ROOT) -> Path:
    """Copy the pipeline files (PROJECT_FILES) from source into dest.

    Snapshot the checkout once with this and build every repository from the snapshot, so that an edit
    made to the checkout while a long check runs cannot make two runs differ.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    folders = {Path(path).parts[0] for path in pipeline_files(Path(source)) if path != "dvc.yaml"}
    for name in (*PROJECT_FILES, *sorted(folders)):
        origin = Path(source) / name
        if not origin.exists():  # an older checkout (benchmarks' --code) may lack one
            continue
        if origin.is_dir():
            shutil.copytree(origin, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, dest / name)
    return dest


def make_repo(path: Path, params: dict, source: Path = ROOT) -> Path:
    """A fresh git + DVC repository on branch main holding the pipeline (copied from source: the checkout,
    or a copy_pipeline() snapshot) and the given params, committed."""
    path = copy_pipeline(path, source)
    write_params(path, params)
    git(path, "init", "-q", "-b", "main")
    _configure_git(path)
    dvc(path, "init", "-q")
    # What `dvc config core.analytics false` and `dvc config core.autostage true` write, without two more processes.
    with open(path / ".dvc" / "config", "a", encoding="utf-8") as config:
        config.write("[core]\n    analytics = false\n    autostage = true\n")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "pipeline")
    return path


def clone(source: Path, dest: Path) -> Path:
    """`git clone` a scratch repository (its DVC data stays behind: `dvc pull` or `dvc checkout` fetches it)."""
    run(Path(dest).parent, "git", "clone", "-q", str(source), str(dest))
    _configure_git(Path(dest))
    return Path(dest)


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


def stage_names(repo: Path, all_pipelines: bool = False) -> list[str]:
    """The stages dvc.yaml declares, in file order (all_pipelines: then every other dvc.yaml's, as DVC names them:
    'sub/dvc.yaml:stage')."""
    names = []
    for pipeline in pipeline_files(Path(repo)) if all_pipelines else ("dvc.yaml",):
        stages = yaml.safe_load((Path(repo) / pipeline).read_text(encoding="utf-8"))["stages"]
        names += [name if pipeline == "dvc.yaml" else f"{pipeline}:{name}" for name in stages]
    return names


def stages_run(output: str) -> list[str]:
    """Stages a `dvc repro` / `dvc exp run` log shows as run: "Running stage 'x'"."""
    return re.findall(r"Running stage '([^']+)'", output)


def stages_restored(output: str) -> list[str]:
    """Stages restored from DVC's run-cache instead of run: "Stage 'x' is cached - skipping run"."""
    return re.findall(r"Stage '([^']+)' is cached", output)


def stages_skipped(output: str) -> list[str]:
    """Stages a log shows as unchanged: "Stage 'x' didn't change, skipping"."""
    return re.findall(r"Stage '([^']+)' didn't change, skipping", output)
