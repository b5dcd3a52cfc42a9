"""`dvc status` says up to date only when it is true, and a failed run leaves nothing for git to pick up: a
params.yaml edit made while `train` runs fails the stage, and after the rerun `git status` is clean under data/ and
models/ although DVC rolled back the ignore entries of that first run (treeverse/dvc#11091)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from synthetic.repos import (
    dvc,
    git,
    read_params,
    stages_run,
    subprocess_env,
    write_params,
)
from tests.helpers import holding, wait_for

pytestmark = pytest.mark.e2e

LONG_TRAINING = 5  # epochs: train is held after its first (tests/hold), so any number above 2 will do


def test_params_edited_while_train_runs_fail_it_and_git_status_stays_clean(reproduced, tmp_path):
    repo = reproduced.copy(tmp_path / "repo")
    params = read_params(repo)
    params["split"]["seed"] += 1  # split and features run before train in the same `dvc repro`
    params["train"]["epochs"] = LONG_TRAINING
    write_params(repo, params)

    log, held = tmp_path / "repro.log", tmp_path / "train.held"
    with open(log, "wb") as output:  # a file, not a pipe, so a full pipe can never block dvc
        process = subprocess.Popen(
            [sys.executable, "-m", "dvc", "repro"],
            cwd=repo,
            env=holding(subprocess_env(), held, HOLD_TRAINING="1"),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        # train has loaded its params, finished its first epoch and waits (tests/hold): the edit lands while it
        # runs, however fast the machine trains.
        wait_for(held.exists, "train's first epoch", 480, process, log)
        params = read_params(repo)
        params["train"]["epochs"] = 2
        write_params(repo, params)
        held.with_suffix(".release").touch()
        process.wait(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text(errors="replace")
    assert process.returncode != 0, text[-4000:]
    assert f"params.yaml changed while the stage ran (train.epochs {LONG_TRAINING} -> 2)" in text, text[-4000:]
    assert stages_run(text) == ["split", "features", "audit", "train"]

    # dvc.lock must not claim the long-trained head was made with epochs: 2.
    assert dvc(repo, "status", "-q", check=False).returncode == 1
    assert "train" in dvc(repo, "status").stdout
    porcelain = git(repo, "status", "--porcelain", "--untracked-files=all").stdout
    addable = [line for line in porcelain.splitlines() if line[3:].startswith(("data/", "models/"))]
    assert addable == [], porcelain

    rerun = dvc(repo, "repro", "evaluate")  # train again, and what reads the head next (the rest reads it the same way)
    assert stages_run(f"{rerun.stdout}\n{rerun.stderr}") == ["train", "evaluate"]
    assert "Data and pipelines are up to date." in dvc(repo, "status", "evaluate").stdout
    porcelain = git(repo, "status", "--porcelain", "--untracked-files=all").stdout
    changed = [line[3:] for line in porcelain.splitlines()]
    assert changed and not [p for p in changed if p.startswith(("data/", "models/"))], porcelain
    assert all(p in ("dvc.lock", "params.yaml") or p.startswith("metrics/") for p in changed), porcelain
