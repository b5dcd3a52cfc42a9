"""The README's commands, end to end, leave DVC telling the truth. After each of them, in the checkout and in a clone at
another path, plain `dvc status` says "Data and pipelines are up to date." and `dvc checkout`, `dvc pull` and
`git checkout` with DVC's hooks exit 0 after a fine-tuning experiment (stopped by SIGTERM, then resumed from its
checkpoint by `dvc exp run`) and `dvc push`, in the checkout and in a clone after `dvc pull` and the one `dvc repro`
that makes its data/source, which reruns nothing else. (After the first `dvc repro`, in the checkout and in a clone
after `dvc pull`, and after a head experiment kept with `dvc exp apply` and `dvc repro`: tests/test_workflows.py, with
the experiments' other checks.)
`python -m tools.verify` passes, then fails on a pin change.

All on the session's reproduced repository (tests/reproduced.py): each test works in a copy or a clone of it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from synthetic.repos import clone, commit_all, dvc, git, md5_of, read_params, run, stages_run, write_params
from tests.helpers import stage_command, wait_for

pytestmark = pytest.mark.e2e

CLEAN = "Data and pipelines are up to date."


def output(result) -> str:
    return f"{result.stdout}\n{result.stderr}"


def verify(repo: Path, *args: str):
    return run(repo, sys.executable, "-m", "tools.verify", *args, check=False)


def assert_clean(repo: Path) -> None:
    """Plain `dvc status` (every stage of the pipeline) is clean and `dvc checkout` has nothing to fail on."""
    status = dvc(repo, "status", check=False)
    assert status.returncode == 0 and CLEAN in status.stdout, output(status)
    checkout = dvc(repo, "checkout", check=False)
    assert checkout.returncode == 0 and "failed" not in output(checkout).lower(), output(checkout)


def assert_a_clone_elsewhere_is_clean(repo: Path, tmp_path: Path) -> Path:
    """`git clone` at another path, `dvc pull`, the one `dvc repro` that makes data/source; then clean, and git
    checkouts with DVC's hooks back and forth."""
    (tmp_path / "elsewhere" / "deeper").mkdir(parents=True)
    other = clone(repo, tmp_path / "elsewhere" / "deeper" / "clone")
    pulled = dvc(other, "pull", check=False)
    assert pulled.returncode == 0, output(pulled)
    assert stages_run(output(dvc(other, "repro"))) == ["source"]  # data/source is per machine; the rest was pulled
    assert_clean(other)
    dvc(other, "install")  # post-checkout runs `dvc checkout`
    git(other, "checkout", "-q", "-b", "other")
    (other / "notes.txt").write_text("a branch\n")
    commit_all(other, "a branch")
    for branch in ("main", "other", "main"):
        switched = git(other, "checkout", branch, check=False)
        assert switched.returncode == 0 and "ERROR" not in output(switched), output(switched)
    assert_clean(other)
    return other


def test_a_fine_tuning_experiment_stopped_resumes_and_after_a_push_a_clone_pulls_the_fine_tuned_classifier(
    reproduced, tmp_path
):
    repo = reproduced.copy(tmp_path / "repo")
    dvc(repo, "remote", "modify", "storage", "url", str(tmp_path / "remote"))  # not the session's shared remote
    commit_all(repo, "own remote")
    params = read_params(repo)
    params["finetune"]["epochs"] = 2
    write_params(repo, params)

    # Stopped in its second epoch (SIGTERM: a CI job cancelled): one line, and the first epoch's checkpoint stays.
    checkpoint = repo / "models/.finetuned.tmp-resume/state.npz"
    args = ["data/images", "data/split", "data/features", "models/head.keras", "models/finetuned", "metrics/finetune"]
    command, env = stage_command("finetune", *args)
    log = tmp_path / "stopped.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            wait_for(checkpoint.is_file, "the first epoch's checkpoint", timeout=300, process=process, log=log)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=120) == 128 + signal.SIGTERM
        finally:
            process.kill()
    stopped = log.read_text()
    assert stopped.replace("\r", "\n").strip().splitlines()[-1] == "terminated (SIGTERM)", stopped[-3000:]
    assert "Traceback" not in stopped and checkpoint.is_file()

    # The experiment (params.yaml as edited) resumes from the checkpoint, which DVC left alone.
    ran = dvc(repo, "exp", "run")
    assert stages_run(output(ran)) == ["finetune", "export"]  # the features are cached: the head is not retrained
    assert "finetune: resuming after epoch 1" in ran.stdout, ran.stdout[-3000:]
    assert not checkpoint.parent.exists()
    assert (repo / "models/finetuned/weights.npz").is_file()
    assert_clean(repo)
    commit_all(repo, "fine-tuned")
    dvc(repo, "push")
    other = assert_a_clone_elsewhere_is_clean(repo, tmp_path)
    assert md5_of(other / "models/classifier.keras") == md5_of(repo / "models/classifier.keras")
    # The classifier the clone pulled is the fine-tuned one (export names it; predict says so: test_finetune).
    with zipfile.ZipFile(other / "models/classifier.keras") as model:
        assert json.loads(model.read("config.json"))["config"]["name"] == "finetuned_classifier"


def test_verify_passes_on_the_run_and_fails_on_a_pin_change(reproduced, tmp_path):
    work = clone(reproduced.path, tmp_path / "pins")
    passed = verify(work)
    assert passed.returncode == 0, output(passed)
    requirements = work / "requirements.txt"
    requirements.write_text(requirements.read_text().replace("numpy==", "numpy==0.0.0+", 1))
    commit_all(work, "a pin changed")
    failed = verify(work)
    assert failed.returncode == 1 and "requirements.txt changed" in failed.stderr, output(failed)
    assert "dvc repro" in failed.stderr
