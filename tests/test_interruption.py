"""A stage killed mid-way leaves no half-written output, and the rerun gives exactly a clean run's result."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from stages.split import list_images, split_images, write_manifests
from synthetic.datasets import make_image_folders
from synthetic.repos import ROOT
from tests.helpers import holding_decoding, run_stage, stage_command, wait_for

pytestmark = pytest.mark.e2e

FEATURES_ARGS = ("data/images", "data/split", "data/features")


def make_project(folder: Path, per_class: int = 30) -> Path:
    """A folder with params.yaml, data/images and data/split: what the features stage reads."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["features"].update(backbone="resnet50", weights=None, image_size=32, batch_size=4)
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))
    images = folder / "data" / "images"
    make_image_folders(images, n_classes=3, per_class=per_class, size=32, seed=5, extras=False)
    write_manifests(split_images(list_images(images), 0.2, 0.2, 42), folder / "data" / "split")
    return folder


def run_features(cwd: Path) -> None:
    result = run_stage("features", *FEATURES_ARGS, cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stderr


def output_files(features: Path) -> dict[str, bytes]:
    return {p.relative_to(features).as_posix(): p.read_bytes() for p in sorted(features.rglob("*")) if p.is_file()}


def test_features_killed_halfway_then_rerun_equals_clean_run(tmp_path):
    project = make_project(tmp_path / "project")
    data = project / "data"
    command, env = stage_command("features", *FEATURES_ARGS)
    held = tmp_path / "held"
    env = holding_decoding(env, data / "split", held)  # it cannot finish before the kill, however fast the machine

    log = tmp_path / "killed_run.log"
    with open(log, "wb") as output:  # a file, not a pipe, so a full pipe can never block the stage
        process = subprocess.Popen(command, cwd=project, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        # Once the last image is being decoded, features files are open in the scratch output: kill it mid-write.
        wait_for(held.exists, "the stage decodes its last image", 240, process, log)
        assert any(data.rglob("features.npy"))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (data / "features" / "train" / "features.npy").exists()  # killed halfway: only scratch

    run_features(project)  # the rerun
    clean = make_project(tmp_path / "clean")
    run_features(clean)

    resumed, expected = output_files(data / "features"), output_files(clean / "data" / "features")
    assert (
        sorted(resumed)
        == sorted(expected)
        == [
            "classes.json",
            *(f"{part}/{name}" for part in ("test", "train", "val") for name in ("features.npy", "labels.npy")),
        ]
    )
    assert resumed == expected  # byte-identical .npy files
    assert sorted(p.name for p in data.iterdir()) == ["features", "images", "split"]  # no scratch left
