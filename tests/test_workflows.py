"""Reproducibility workflows, end to end with real `dvc` commands on the session's reproduced repository
(tests/reproduced.py: the official zip's layout over HTTP, CPU, 32 px, random-init backbone): nothing run twice,
offline status, experiments (direct, kept and queued), and a shared cache through a DVC remote. (Diffs across
commits: tests/test_report.py, whose fixture commits a second run.)

Every test works in a copy of that repository or in a `git clone` of it that pulls its data from its local DVC
remote, and so reruns at most the head stages. Determinism (a second run from scratch, every output compared) is
tests/test_check_reproducible.py.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from synthetic.repos import (
    clone,
    dvc,
    dvc_status,
    git,
    md5_of,
    read_params,
    stages_restored,
    stages_run,
    stages_skipped,
    subprocess_env,
)

pytestmark = pytest.mark.e2e

HEAD_STAGES = ["train", "evaluate"]  # what a head experiment (`dvc exp run evaluate -S train.*`) runs
AFTER_HEAD = ["finetune", "export"]  # and `dvc repro` after a train.* change: the delivered classifier too
UP_TO_DATE = "Data and pipelines are up to date."
# `dvc exp show --csv` names a metric with its file where another file has the same key (metrics/finetune/test.json).
LOSS, ACCURACY = "metrics/test.json:loss", "metrics/test.json:accuracy"
# Every request through a proxy on a closed port: a command that went to the network would fail.
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}


def output(result) -> str:
    return f"{result.stdout}\n{result.stderr}"


status = dvc_status


def metrics_of(repo: Path) -> dict:
    return json.loads((repo / "metrics/test.json").read_text())


def pulled_clone(reproduced, dest: Path) -> Path:
    """A `git clone` of the run with its DVC data pulled from its remote, and data/source (made per machine, not in
    git) made."""
    repo = clone(reproduced.path, dest)
    dvc(repo, "pull")
    dvc(repo, "repro", "source")
    return repo


# ------------------------------------------------------------------------------------------- one run


def test_the_run_made_every_output(reproduced):
    a = reproduced.path
    manifests = sorted(p.relative_to(a).as_posix() for p in (a / "data/split").glob("*.csv"))
    arrays = sorted(p.relative_to(a).as_posix() for p in (a / "data/features").glob("*/*.npy"))
    assert manifests == ["data/split/test.csv", "data/split/train.csv", "data/split/val.csv"]
    assert len(arrays) == 6  # {train,val,test}/{features,labels}.npy
    assert metrics_of(a)["n_test"] == 25
    assert (a / "models/classifier.keras").is_file() and (a / "metrics/train/metrics.json").is_file()


# ------------------------------------------------------------------------------------------- nothing twice


def test_second_repro_runs_nothing_and_status_is_clean_offline(reproduced, tmp_path, monkeypatch):
    repo = reproduced.copy(tmp_path / "repo")
    for name, value in OFFLINE.items():  # what synthetic.repos runs inherits the environment
        monkeypatch.setenv(name, value)
    assert subprocess_env()["http_proxy"] == OFFLINE["http_proxy"]
    assert read_params(repo)["data"]["url"] == reproduced.url
    assert status(repo) == {}
    assert UP_TO_DATE in dvc(repo, "status").stdout
    assert dvc(repo, "status", "-q", check=False).returncode == 0
    lock = (repo / "dvc.lock").read_bytes()
    result = dvc(repo, "repro")
    assert stages_run(output(result)) == [] and stages_restored(output(result)) == []
    assert UP_TO_DATE in output(result)
    assert (repo / "dvc.lock").read_bytes() == lock
    assert git(repo, "status", "--porcelain").stdout == ""
    checkout = dvc(repo, "checkout", check=False)
    assert checkout.returncode == 0 and "failed" not in output(checkout).lower(), output(checkout)


# ------------------------------------------------------------------------------------------- shared cache


def test_push_then_pull_in_a_clone_skips_every_stage_but_the_source_link(reproduced, tmp_path):
    assert len([p for p in reproduced.remote.rglob("*") if p.is_file()]) > 60  # images, features, models, ...
    repo = clone(reproduced.path, tmp_path / "clone")
    assert not (repo / "data/features").exists()
    assert status(repo) != {}  # outputs missing before the pull
    dvc(repo, "pull")
    assert list(status(repo)) == ["source", "download"]  # data/source is made per machine (not in git)
    result = dvc(repo, "repro")
    assert stages_run(output(result)) == ["source"] and stages_restored(output(result)) == []
    assert "features" in stages_skipped(output(result))
    assert status(repo) == {} and UP_TO_DATE in dvc(repo, "status").stdout  # plain `dvc status`, every stage
    checkout = dvc(repo, "checkout", check=False)
    assert checkout.returncode == 0 and "failed" not in output(checkout).lower(), output(checkout)
    for path in ("data/features/train/features.npy", "models/head.keras", "models/classifier.keras"):
        assert md5_of(repo / path) == md5_of(reproduced.path / path)
    assert git(repo, "status", "--porcelain").stdout == ""


# ------------------------------------------------------------------------------------------- across commits


# ------------------------------------------------------------------------------------------- experiments


def exp_show_rows(repo: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(dvc(repo, "exp", "show", "--csv").stdout)))


def cache_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for p in (repo / ".dvc/cache/files").rglob("*") if p.is_file())


def test_a_head_experiment_reruns_only_the_head_is_listed_beside_the_baseline_and_is_kept(reproduced, tmp_path):
    repo = pulled_clone(reproduced, tmp_path / "clone")
    cache_before = cache_bytes(repo)
    result = dvc(repo, "exp", "run", "evaluate", "-S", "train.dropout=0.3")  # the README's head experiment
    log = output(result)
    assert stages_run(log) == HEAD_STAGES
    assert "features" in stages_skipped(log) and "Running stage 'features'" not in log
    assert stages_restored(log) == []
    experiment = metrics_of(repo)  # the results are applied to the workspace
    # The experiment stored its head and nothing else: no copy of the frozen backbone in a new classifier.
    assert 0 < cache_bytes(repo) - cache_before <= (repo / "models/head.keras").stat().st_size
    assert md5_of(repo / "models/classifier.keras") == md5_of(reproduced.path / "models/classifier.keras")

    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    baseline = next(entry for entry in shown if entry.get("name") == "main")
    assert baseline["data"]["params"]["params.yaml"]["data"]["train"]["dropout"] == 0.5
    assert baseline["data"]["metrics"]["metrics/test.json"]["data"] == metrics_of(reproduced.path)
    (run,) = [rev for exp in baseline["experiments"] for rev in exp["revs"]]
    assert run["data"]["params"]["params.yaml"]["data"]["train"]["dropout"] == 0.3
    assert run["data"]["metrics"]["metrics/test.json"]["data"] == experiment
    assert experiment["loss"] != metrics_of(reproduced.path)["loss"]

    rows = {row["rev"] if row["typ"] == "baseline" else row["Experiment"]: row for row in exp_show_rows(repo)}
    assert rows["main"]["train.dropout"] == "0.5" and float(rows["main"][LOSS]) == metrics_of(reproduced.path)["loss"]
    assert rows[run["name"]]["train.dropout"] == "0.3" and float(rows[run["name"]][LOSS]) == experiment["loss"]

    # Until it is kept, the classifier on disk is the baseline's: finetune and export are listed as changed.
    assert list(status(repo)) == AFTER_HEAD
    # Kept as the README says, from the baseline's workspace (as after a sweep): `dvc exp apply <exp> && dvc repro`.
    git(repo, "checkout", "-q", "--", ".")
    dvc(repo, "checkout", "--force")
    dvc(repo, "exp", "apply", run["name"])
    exported = output(dvc(repo, "repro"))
    assert stages_run(exported) == AFTER_HEAD and "train" in stages_skipped(exported)
    assert md5_of(repo / "models/classifier.keras") != md5_of(reproduced.path / "models/classifier.keras")
    assert UP_TO_DATE in dvc(repo, "status").stdout  # plain `dvc status`, every stage
    checkout = dvc(repo, "checkout", check=False)
    assert checkout.returncode == 0 and "failed" not in output(checkout).lower(), output(checkout)


def test_queued_experiment_runs_in_the_background(reproduced, tmp_path):
    repo = pulled_clone(reproduced, tmp_path / "clone")
    queued = output(dvc(repo, "exp", "run", "--queue", "evaluate", "-S", "train.dropout=0.7"))
    name = queued.split("Queued experiment '")[1].split("'")[0]
    assert status(repo) == {}  # queueing runs nothing in the workspace
    # `dvc queue start` returns at once (the worker runs in the background); `dvc exp run --run-all` runs the queue
    # and returns when it is done: the wait is on that process, bounded by its timeout.
    run_all = dvc(repo, "exp", "run", "--run-all", check=False, timeout=420)
    line = next((row for row in dvc(repo, "queue", "status").stdout.splitlines() if name in row), "")
    assert run_all.returncode == 0 and "Success" in line, output(run_all)[-4000:]
    log = dvc(repo, "queue", "logs", name).stdout
    # The queue runs in a temporary clone, which makes its own data/source (per machine, not in git): a second.
    assert stages_run(log) == ["source", *HEAD_STAGES] and "features" in stages_skipped(log)

    rows = {row["rev"] if row["typ"] == "baseline" else row["Experiment"]: row for row in exp_show_rows(repo)}
    assert rows["main"]["train.dropout"] == "0.5" and float(rows["main"][LOSS]) == metrics_of(reproduced.path)["loss"]
    assert rows[name]["train.dropout"] == "0.7" and rows[name]["State"] == "Success"
    assert float(rows[name][LOSS]) != metrics_of(reproduced.path)["loss"]

    # What exp show lists is what the background run wrote: apply it and score its predictions.csv by hand.
    dvc(repo, "exp", "apply", name)
    assert read_params(repo)["train"]["dropout"] == 0.7
    applied = metrics_of(repo)
    assert float(rows[name][ACCURACY]) == pytest.approx(applied["accuracy"], abs=1e-6)
    assert float(rows[name][LOSS]) == pytest.approx(applied["loss"], abs=1e-6)
    predictions = list(csv.DictReader((repo / "metrics/predictions.csv").read_text().splitlines()))
    assert len(predictions) == applied["n_test"] == 25
    correct = sum(row["actual"] == row["predicted"] for row in predictions)
    assert applied["accuracy"] == pytest.approx(correct / len(predictions), abs=1e-6)
