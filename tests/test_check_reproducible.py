"""The comparison logic of tests/check_reproducible.py: it must name every file that differs between two runs,
byte for byte, with nothing masked (models included: transfer/artifacts/keras_files.py writes them byte-stable). Then
the check itself, on the pipeline (the last test): the one place the suite pays for a second full run."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from synthetic import repos as scratch_repo
from tests import check_reproducible as cr
from transfer.artifacts.keras_files import FIXED_TIME

DVC_YAML = {
    "stages": {
        "split": {"cmd": "x", "outs": ["data/split"]},
        "features": {"cmd": "x", "outs": ["data/features"]},
        "train": {"cmd": "x", "outs": ["models/head.keras", {"metrics/train/metrics.json": {"cache": False}}]},
        "evaluate": {"cmd": "x", "outs": [{"metrics/test.json": {"cache": False}}]},
    }
}
METRICS = {"accuracy": 0.916667, "loss": 0.123872, "n_test": 12}


def write_keras(path: Path, weights: bytes, date: str, object_id: int) -> None:
    """A file laid out like a Keras 3 .keras archive."""
    config = {
        "class_name": "Sequential",
        "config": {
            "dtype": {"shared_object_id": object_id},
            "layers": [{"class_name": "Dense", "config": {"units": 4, "dtype": {"shared_object_id": object_id}}}],
        },
    }
    members = {
        "metadata.json": json.dumps({"keras_version": "3.15.1", "date_saved": date}),
        "config.json": json.dumps(config),
        "model.weights.h5": weights,
    }
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            # A fixed entry time, as keras_files writes: two runs a second apart must give the same bytes.
            zf.writestr(zipfile.ZipInfo(name, date_time=FIXED_TIME), data)


def write_lock(repo: Path, features_md5: str, head_md5: str, head_size: int) -> None:
    lock = {
        "schema": "2.0",
        "stages": {
            "features": {
                "cmd": "x",
                "outs": [{"path": "data/features", "hash": "md5", "md5": features_md5, "size": 10}],
            },
            "train": {
                "cmd": "x",
                "deps": [{"path": "data/features", "hash": "md5", "md5": features_md5, "size": 10}],
                "outs": [{"path": "models/head.keras", "hash": "md5", "md5": head_md5, "size": head_size}],
            },
            "evaluate": {
                "cmd": "x",
                "deps": [{"path": "models/head.keras", "hash": "md5", "md5": head_md5, "size": head_size}],
            },
        },
    }
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))


def make_run(root: Path, date: str = "2026-01-01@00:00:00", object_id: int = 140529302848848) -> Path:
    """A directory shaped like a reproduced repository."""
    root.mkdir(parents=True)
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (root / "data/split").mkdir(parents=True)
    for part in ("train", "val", "test"):
        (root / f"data/split/{part}.csv").write_text("path,label\nant/image_0001.jpg,ant\n")
        (root / f"data/features/{part}").mkdir(parents=True)
        np.save(root / f"data/features/{part}/features.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
        np.save(root / f"data/features/{part}/labels.npy", np.zeros(3, np.int32))
    (root / "data/features/classes.json").write_text('["accordion", "ant"]\n')
    (root / "models").mkdir()
    write_keras(root / "models/head.keras", b"\x89HDF weights", date, object_id)
    (root / "metrics/train").mkdir(parents=True)
    (root / "metrics/train/metrics.json").write_text('{"step": 7}\n')
    (root / "metrics/test.json").write_text(json.dumps(METRICS, indent=2) + "\n")
    head = root / "models/head.keras"
    write_lock(root, "aaa.dir", scratch_repo.md5_of(head), head.stat().st_size)
    return root


@pytest.fixture
def runs(tmp_path) -> tuple[Path, Path]:
    return make_run(tmp_path / "run1"), make_run(tmp_path / "run2")


def test_identical_runs_pass(runs):
    assert cr.compare_runs(*runs) == []


def test_every_declared_output_file_is_compared(runs):
    files = cr.output_files(runs[0], cr.declared_outputs(runs[0]))
    assert "data/split/test.csv" in files
    assert "data/features/train/features.npy" in files
    assert "metrics/test.json" in files and "models/head.keras" in files
    assert len(files) == 3 + 6 + 1 + 1 + 1 + 1


def test_a_changed_feature_array_is_named(runs):
    a, b = runs
    features = np.load(b / "data/features/val/features.npy")
    features[1, 2] = np.nextafter(features[1, 2], np.float32(99))  # one ulp
    np.save(b / "data/features/val/features.npy", features)
    assert cr.compare_runs(a, b, lock=False) == ["data/features/val/features.npy: differs between the runs"]


def test_a_changed_split_manifest_is_named(runs):
    a, b = runs
    (b / "data/split/train.csv").write_text("path,label\nant/image_0002.jpg,ant\n")
    problems = cr.compare_runs(a, b)
    assert problems == ["data/split/train.csv: differs between the runs"]


def test_a_changed_metric_is_named_with_its_values(runs):
    a, b = runs
    (b / "metrics/test.json").write_text(json.dumps({**METRICS, "accuracy": 0.833333}, indent=2) + "\n")
    problems = cr.compare_runs(a, b)
    assert problems == ["metrics/test.json: differs between the runs: accuracy 0.916667 vs 0.833333"]


def test_missing_and_extra_files_are_named(runs):
    a, b = runs
    (a / "data/features/test/labels.npy").unlink()
    (b / "data/split/extra.csv").write_text("x\n")
    assert cr.compare_runs(a, b) == [
        "data/features/test/labels.npy: only in run 2",
        "data/split/extra.csv: only in run 2",
    ]
    assert cr.compare_runs(b, a) == [
        "data/features/test/labels.npy: only in run 1",
        "data/split/extra.csv: only in run 1",
    ]


def test_keras_files_differing_only_in_save_time_and_object_ids_are_named(tmp_path):
    # What Keras's own save gives from two runs: no longer excused, as the project writes byte-stable models.
    a = make_run(tmp_path / "run1", date="2026-01-01@00:00:00", object_id=140529302848848)
    b = make_run(tmp_path / "run2", date="2026-01-01@00:00:51", object_id=139695814512208)
    problems = cr.compare_runs(a, b)
    assert problems[0] == "models/head.keras: differs between the runs (member(s) metadata.json, config.json differ)"
    assert len(problems) == 2 and problems[1].startswith("dvc.lock differs between the runs")


def test_keras_files_with_different_weights_are_named(runs):
    a, b = runs
    write_keras(b / "models/head.keras", b"\x89HDF other weights", "2026-01-01@00:00:00", 140529302848848)
    problems = cr.compare_runs(a, b, lock=False)
    assert problems == ["models/head.keras: differs between the runs (member(s) model.weights.h5 differ)"]


def test_keras_files_with_the_same_members_in_another_zip_layout_are_named(runs):
    a, b = runs
    with zipfile.ZipFile(a / "models/head.keras") as zf:
        entries = [(name, zf.read(name)) for name in zf.namelist()]
    with zipfile.ZipFile(b / "models/head.keras", "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    assert cr.compare_runs(a, b, lock=False) == [
        "models/head.keras: differs between the runs (same members, different zip layout "
        "(entry order, times or compression))"
    ]


def test_a_lock_that_differs_only_in_formatting_is_reported(runs):
    a, b = runs
    (b / "dvc.lock").write_text(yaml.safe_dump(yaml.safe_load((a / "dvc.lock").read_text()), sort_keys=True))
    problems = cr.compare_runs(a, b)
    assert len(problems) == 1 and problems[0].startswith("dvc.lock differs between the runs")


def test_a_different_hash_in_dvc_lock_is_reported(runs):
    a, b = runs
    write_lock(b, "bbb.dir", scratch_repo.md5_of(b / "models/head.keras"), (b / "models/head.keras").stat().st_size)
    problems = cr.compare_runs(a, b)
    assert len(problems) == 1
    assert problems[0].startswith("dvc.lock differs between the runs")
    assert "-      md5: aaa.dir" in problems[0] and "+      md5: bbb.dir" in problems[0]


def test_a_missing_dvc_lock_is_reported(runs):
    a, b = runs
    (b / "dvc.lock").unlink()
    assert cr.compare_runs(a, b) == ["dvc.lock: missing in run 2"]


def test_the_real_dvc_yaml_outputs_are_all_found():
    outs = cr.declared_outputs(scratch_repo.ROOT)
    for path in ("data/split", "data/features", "metrics/test.json", "models/head.keras", "models/classifier.keras"):
        assert path in outs


def test_main_exits_non_zero_naming_the_file(monkeypatch, tmp_path, capsys):
    problem = "data/features/train/features.npy: differs between the runs"
    monkeypatch.setattr(cr, "check", lambda workdir: ([problem], ""))
    assert cr.main(["--workdir", str(tmp_path / "work"), "--gpu"]) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and "data/features/train/features.npy: differs between the runs" in err


def test_main_exits_zero_and_cleans_up_on_success(monkeypatch, tmp_path, capsys):
    seen = []

    def check(workdir):
        seen.append((workdir, os.environ.get("CUDA_VISIBLE_DEVICES")))
        return [], "  summary line"

    monkeypatch.setattr(cr, "check", check)
    monkeypatch.setattr(cr.tempfile, "mkdtemp", lambda prefix: str(tmp_path / "scratch"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # restored after the test
    assert cr.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("check_reproducible: OK") and "summary line" in out
    # The runs see no GPU (CPU results are the ones that must be bit-identical); the folder is removed.
    assert seen == [((tmp_path / "scratch").resolve(), "-1")] and not (tmp_path / "scratch").exists()


def test_stage_log_parsing():
    log = (
        "Stage 'download' didn't change, skipping\nRunning stage 'train':\n> python -m stages.train\n"
        "Stage 'evaluate' is cached - skipping run, checking out outputs\nRunning stage 'export':\n"
    )
    assert scratch_repo.stages_run(log) == ["train", "export"]
    assert scratch_repo.stages_restored(log) == ["evaluate"]
    assert scratch_repo.stages_skipped(log) == ["download"]


def test_copy_pipeline_snapshot_has_the_project_files(tmp_path):
    snapshot = scratch_repo.copy_pipeline(tmp_path / "snap")
    for name in scratch_repo.PROJECT_FILES:
        assert (snapshot / name).exists()
    assert not list(snapshot.rglob("__pycache__"))
    shutil.rmtree(snapshot)


# ------------------------------------------------------------------------------------------- reproduce(), for real
# A one-stage pipeline without TensorFlow, so real `dvc repro` runs take seconds (still e2e: dvc in a repository).

GENERATORS = {
    "steady": "open('out.txt', 'w').write('same every time\\n')",
    "random": "import random; open('out.txt', 'w').write(f'{random.random()}\\n')",
}


def tiny_repo(root: Path, kind: str, always_changed: bool = False) -> Path:
    source = root.parent / f"{root.name}-source"
    (source / "stages").mkdir(parents=True)
    (source / "tools").mkdir()
    (source / "transfer").mkdir()  # copy_pipeline copies every PROJECT_FILES entry
    (source / ".gitignore").write_text("__pycache__/\n")
    (source / "stages/gen.py").write_text(GENERATORS[kind] + "\n")
    stage = {"cmd": "python stages/gen.py", "deps": ["stages/gen.py"], "outs": ["out.txt"]}
    if always_changed:
        stage["always_changed"] = True
    (source / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"make": stage}}))
    (source / "params.yaml").write_text("{}\n")
    return scratch_repo.make_repo(root, {"seed": 1}, source=source)


@pytest.mark.e2e
def test_compare_names_the_output_of_a_nondeterministic_stage(tmp_path):
    a, b = tiny_repo(tmp_path / "a", "random"), tiny_repo(tmp_path / "b", "random")
    assert cr.reproduce(a).problems == [] and cr.reproduce(b).problems == []
    problems = cr.compare_runs(a, b)
    assert problems[0] == "out.txt: differs between the runs"
    assert len(problems) == 2 and problems[1].startswith("dvc.lock differs between the runs")


@pytest.mark.e2e
def test_reproduce_reports_a_stage_that_runs_again(tmp_path):
    report = cr.reproduce(tiny_repo(tmp_path / "a", "steady", always_changed=True), "run 1")
    assert report.stages == ["make"]
    assert any(p.startswith("run 1: dvc status is not clean after dvc repro") for p in report.problems)
    assert "run 1: a second dvc repro reran stage(s) make" in report.problems


# ------------------------------------------------------------------------------------------- the pipeline, twice


@pytest.mark.e2e
def test_a_second_run_from_scratch_gives_the_same_bytes(reproduced, tmp_path, monkeypatch):
    """Same params, same bytes: a second run from scratch, in a fresh repository at another path with its own empty
    cache, gives the session's reproduced repository's outputs byte for byte (the split manifests, the feature
    arrays, the models, the metrics and every other declared output) and the same dvc.lock; in each, `dvc status` is
    clean and a second `dvc repro` runs nothing (CI runs it once, as part of the suite)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")  # GPU runs (mixed precision, XLA) need not be bit-identical
    repo = scratch_repo.make_repo(
        tmp_path / "elsewhere" / "run2",
        scratch_repo.read_params(reproduced.path),
        source=scratch_repo.copy_pipeline(tmp_path / "p"),
    )
    report = cr.reproduce(repo, "run 2")
    assert report.problems == []
    first = reproduced.copy(tmp_path / "run1")
    assert cr.compare_runs(first, repo) == []
    files = cr.output_files(first, cr.declared_outputs(first))
    assert {"models/classifier.keras", "models/head.keras", "data/split/train.csv"} <= set(files)
    assert any(f.startswith("data/features/") and f.endswith(".npy") for f in files)
