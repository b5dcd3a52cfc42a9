"""The fault sweep: every stage of every pipeline, on a read-only repository and under SIGTERM, ends in one line,
no traceback, and leaves the repository as it found it: no scratch, no output half-written or replaced. (A stage may
remove its own outputs first, as DVC does before running it: the download stage empties data/raw, so that no
archive of another data.url is left where extract reads.)

One prepared tiny repository and one process for all stages (tests/stage_sweep.py, which reads the stages from
the pipeline files, so a new stage is swept as it lands): Keras is imported once. SIGTERM arrives at the stage's
first write into the repository, when its scratch output exists; read-only is a real read-only mount (as root, in
a mount namespace of its own) or folders without write permission.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from synthetic.datasets import make_archive
from synthetic.repos import ROOT, md5_of, small_params, stage_names, subprocess_env, write_params

pytestmark = pytest.mark.e2e

# Scratch that a stage keeps on purpose, for the next run to resume: a cut download, fine-tuning's checkpoint.
RESUMABLE = ("data/.partial", ".tmp-resume")
CASES = ("normal", "sigterm", "read-only")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[list[dict], str]:
    root = tmp_path_factory.mktemp("sweep")
    archive, repo, results = root / "photos.zip", root / "repo", root / "results.jsonl"
    make_archive(archive, layout="user", n_classes=3, per_class=8, size=32, extras=False)
    params = small_params(str(archive), md5_of(archive))
    params["features"].update(backbone="mobilenetv3large", batch_size=8)  # the lightest backbone to build and save
    params["train"].update(epochs=2)
    params["finetune"].update(epochs=1, batch_size=8)
    repo.mkdir()
    write_params(repo, params)
    command = [sys.executable, "-m", "tests.stage_sweep", str(repo), str(results)]
    if os.geteuid() == 0:  # a read-only mount needs a mount namespace of its own
        command = ["unshare", "--user", "--map-root-user", "--mount", *command]
    env = {**subprocess_env(), "PYTHONPATH": str(ROOT)}
    driver = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    lines = results.read_text(encoding="utf-8").splitlines() if results.exists() else []
    return [json.loads(line) for line in lines], driver.stderr[-5000:]


def changed(result: dict) -> list[str]:
    """Paths added, rewritten or removed by the run: outside the scratch kept on purpose, and but for the stage's own
    outputs removed."""
    before, after = result["before"], result["after"]
    paths = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    own = tuple(result["outs"])
    removed_own = {p for p in paths if p not in after and p.rstrip("/").startswith(own)}
    return sorted(p for p in paths - removed_own if not any(part in p for part in RESUMABLE))


def test_every_stage_of_every_pipeline_is_swept(sweep):
    results, driver = sweep
    expected = [(name.rpartition(":")[2], case) for name in stage_names(ROOT, all_pipelines=True) for case in CASES]
    assert [(r["stage"], r["case"]) for r in results if r["case"] in CASES] == expected, driver
    assert all(r["code"] == 0 for r in results if r["case"] in ("normal", "rerun"))
    assert "Traceback" not in driver, driver


def of_case(sweep, case: str) -> list[dict]:
    results = [r for r in sweep[0] if r["case"] == case]
    assert len(results) == len(stage_names(ROOT, all_pipelines=True)), f"the sweep stopped early:\n{sweep[1]}"
    return results


def test_sigterm_ends_each_stage_in_one_line_and_leaves_nothing(sweep):
    problems = []
    for result in of_case(sweep, "sigterm"):
        stage, lines = result["stage"], result["stderr"].strip().splitlines()
        if not result["first_write"]:
            problems.append(f"{stage}: never wrote into the repository, so SIGTERM was never sent")
        if result["uncaught"] or "Traceback" in result["stderr"]:
            problems.append(f"{stage}: a traceback: {(result['uncaught'] or result['stderr'])[-800:]}")
        elif result["code"] != 143 or not lines or lines[-1] != "terminated (SIGTERM)":
            problems.append(f"{stage}: exit {result['code']}, last line {lines[-1:]} (not 'terminated (SIGTERM)')")
        if changed(result):
            problems.append(f"{stage}: left or lost {changed(result)} (signal at {result['first_write']})")
    assert not problems, "\n".join(problems)


def test_a_read_only_repository_is_one_named_error_in_each_stage(sweep):
    problems = []
    for result in of_case(sweep, "read-only"):
        stage, text = result["stage"], result["stderr"]
        errors = [line for line in text.splitlines() if line.startswith("error: ")]
        if result["uncaught"] or "Traceback" in text:
            problems.append(f"{stage}: a traceback: {(result['uncaught'] or text)[-800:]}")
        elif result["code"] != 1 or len(errors) != 1 or not any(w in errors[0] for w in ("read-only", "permission")):
            problems.append(f"{stage}: exit {result['code']}, error lines {errors} (not one naming read-only)")
        if changed(result):
            problems.append(f"{stage}: changed {changed(result)}")
    assert not problems, "\n".join(problems)
