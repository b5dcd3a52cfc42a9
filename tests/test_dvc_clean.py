"""The README's commands, end to end, leave DVC telling the truth: after `dvc repro`, `dvc status` reports nothing but
the on-demand fine-tuning not yet run; `dvc checkout`, `dvc pull` in a clone at another path and `git checkout`
with DVC's hooks succeed, a head experiment stores only the head, and `python -m tools.verify` passes, then fails on
a pin change.

Every dvc.yaml of the project is covered without naming it (synthetic.repos.pipeline_files): a pipeline that
`dvc repro` does not run must have only uncached outputs, or `dvc checkout` would fail on them (docs/experiments.md,
"Pipelines on demand"). One module fixture pays for the one full `dvc repro`; tests/test_pipeline.py runs
finetune/dvc.yaml after it and checks that `dvc status` is then empty.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from synthetic.datasets import make_archive
from synthetic.repos import (
    clone,
    commit_all,
    copy_pipeline,
    dvc,
    dvc_status,
    git,
    make_repo,
    md5_of,
    pipeline_files,
    run,
    small_params,
    stage_names,
    stages_run,
)
from tests.http_server import FileServer

pytestmark = pytest.mark.e2e


def output(result) -> str:
    return f"{result.stdout}\n{result.stderr}"


def cache_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for p in (repo / ".dvc/cache/files").rglob("*") if p.is_file())


def verify(repo: Path, *args: str):
    return run(repo, sys.executable, "-m", "tools.verify", *args, check=False)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """The README's first run: `dvc repro`, then commit and `dvc push` (the server is gone afterwards)."""
    root = tmp_path_factory.mktemp("clean")
    archive = root / "101_ObjectCategories.tar.gz"
    make_archive(archive, layout="legacy", n_classes=3, per_class=8, size=32)
    with FileServer() as server:
        url = server.add("/files/101_ObjectCategories.tar.gz", archive.read_bytes())
        repo = make_repo(root / "repo", small_params(url, md5_of(archive)), source=copy_pipeline(root / "pipeline"))
        first = dvc(repo, "repro")
    assert set(stages_run(output(first))) == set(stage_names(repo))
    dvc(repo, "remote", "add", "-d", "storage", str(root / "remote"))
    commit_all(repo, "the first run")
    dvc(repo, "push")
    return repo


def on_demand_stages(repo: Path) -> dict[str, dict]:
    """The stages of every dvc.yaml but the top-level one (run on demand), as DVC names them, with their entries."""
    found = {}
    for pipeline in pipeline_files(repo)[1:]:
        for name, stage in yaml.safe_load((repo / pipeline).read_text())["stages"].items():
            found[f"{pipeline}:{name}"] = stage
    return found


def test_after_dvc_repro_status_reports_only_the_on_demand_stages_never_run(repo):
    """`dvc status` is clean for what `dvc repro` runs; an on-demand stage (finetune/dvc.yaml) that was never run is
    listed, truthfully, as not run: its outputs deleted, and its deps "modified" only because it has no lock yet.
    Its outputs are all `cache: false`, so that `dvc checkout`, `dvc pull` and the git hooks have nothing to fail on
    (docs/experiments.md, "Pipelines on demand")."""
    assert pipeline_files(repo)[0] == "dvc.yaml"
    on_demand = on_demand_stages(repo)
    assert set(dvc_status(repo)) == set(on_demand)
    for name, changes in dvc_status(repo).items():
        deleted = {path for change in changes for path, state in change.get("changed outs", {}).items()}
        declared = [next(iter(out)) if isinstance(out, dict) else out for out in on_demand[name]["outs"]]
        assert deleted == set(declared), name
        uncached = [
            isinstance(out, dict) and next(iter(out.values())).get("cache") is False for out in on_demand[name]["outs"]
        ]
        assert all(uncached), name
    assert not (repo / "finetune" / "dvc.lock").exists()
    assert stages_run(output(dvc(repo, "repro"))) == []
    assert "Data and pipelines are up to date." in dvc(repo, "status", "dvc.yaml").stdout


def test_dvc_checkout_and_git_checkout_with_dvc_hooks_succeed(repo, tmp_path):
    result = dvc(repo, "checkout", check=False)
    assert result.returncode == 0 and "failed" not in output(result).lower(), output(result)
    work = clone(repo, tmp_path / "hooks")
    dvc(work, "pull")
    dvc(work, "install")  # post-checkout runs `dvc checkout`
    git(work, "checkout", "-q", "-b", "other")
    (work / "notes.txt").write_text("a branch\n")
    commit_all(work, "a branch")
    for branch in ("main", "other", "main"):
        switched = git(work, "checkout", branch, check=False)
        assert switched.returncode == 0 and "ERROR" not in output(switched), output(switched)


def test_a_clone_at_another_path_pulls_and_reruns_nothing_that_was_pulled(repo, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    other = clone(repo, tmp_path / "elsewhere" / "clone")
    pulled = dvc(other, "pull", check=False)
    assert pulled.returncode == 0, output(pulled)
    assert dvc(other, "status", check=False).returncode == 0
    rerun = dvc(other, "repro")
    assert stages_run(output(rerun)) == ["source"]  # data/source is made per machine; the rest was pulled
    assert set(dvc_status(other)) == set(on_demand_stages(other))
    assert dvc(other, "checkout", check=False).returncode == 0
    for path in ("models/head.keras", "models/classifier.keras"):
        assert md5_of(other / path) == md5_of(repo / path)


def test_a_head_experiment_stores_only_the_head_and_leaves_checkout_working(repo, tmp_path):
    work = clone(repo, tmp_path / "exp")
    dvc(work, "pull")
    dvc(work, "repro")  # data/source, per machine
    before = cache_bytes(work)
    result = dvc(work, "exp", "run", "evaluate", "-S", "train.dropout=0.3")  # the README's head experiment
    assert stages_run(output(result)) == ["train", "evaluate"]
    assert 0 < cache_bytes(work) - before <= (work / "models/head.keras").stat().st_size
    assert dvc(work, "checkout", check=False).returncode == 0


def test_verify_passes_on_the_run_and_fails_on_a_pin_change(repo, tmp_path):
    work = clone(repo, tmp_path / "pins")
    passed = verify(work)
    assert passed.returncode == 0, output(passed)
    requirements = work / "requirements.txt"
    requirements.write_text(requirements.read_text().replace("numpy==", "numpy==0.0.0+", 1))
    commit_all(work, "a pin changed")
    failed = verify(work)
    assert failed.returncode == 1 and "requirements.txt changed" in failed.stderr, output(failed)
    assert "dvc repro" in failed.stderr
