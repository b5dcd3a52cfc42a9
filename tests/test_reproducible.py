"""Same params, same bytes: a second run from scratch, in a fresh repository at another path with its own empty
cache, gives the session's reproduced repository's outputs byte for byte (the split manifests, the feature arrays,
the models, the metrics and every other declared output) and the same dvc.lock; in each, `dvc status` is clean and a
second `dvc repro` runs nothing. The comparison is tests/check_reproducible.py's, tested in test_check_reproducible.py;
this is the one place the suite pays for a second full run (CI runs it once, as part of the suite)."""

from __future__ import annotations

import pytest

from synthetic.repos import copy_pipeline, make_repo, read_params
from tests.check_reproducible import compare_runs, declared_outputs, output_files, reproduce


@pytest.mark.e2e
def test_a_second_run_from_scratch_gives_the_same_bytes(reproduced, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")  # GPU runs (mixed precision, XLA) need not be bit-identical
    repo = make_repo(
        tmp_path / "elsewhere" / "run2", read_params(reproduced.path), source=copy_pipeline(tmp_path / "p")
    )
    report = reproduce(repo, "run 2")
    assert report.problems == []
    first = reproduced.copy(tmp_path / "run1")
    assert compare_runs(first, repo) == []
    files = output_files(first, declared_outputs(first))
    assert {"models/classifier.keras", "models/head.keras", "data/split/train.csv"} <= set(files)
    assert any(f.startswith("data/features/") and f.endswith(".npy") for f in files)
