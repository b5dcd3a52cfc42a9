"""The features stage checks its memory before it spends it: an estimate against what the machine offers."""

from __future__ import annotations

import math
import resource
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil
import pytest
import yaml

from tests.helpers import FEATURES_ARGS, SMALL_FEATURES, features_project, stage_command
from transfer.core.errors import StageError
from transfer.core.params import FeaturesParams
from transfer.features import memory
from transfer.finetune import memory as finetune_memory

GIB = 2**30


def fake_proc(tmp_path: Path, cgroup_line: str) -> Path:
    """A /proc holding only the given /proc/self/cgroup line."""
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup_line + "\n")
    return proc


def machine_offers(monkeypatch, available: int) -> None:
    """The machine's available memory as psutil reports it."""
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=available))


def write_files(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_memory_on_offer_is_the_lower_of_memavailable_and_the_cgroup_limit(tmp_path, monkeypatch):
    machine_offers(monkeypatch, 16 * GIB)
    # cgroup v2, as systemd and Docker set it up: the limit sits on a parent of the process's own cgroup.
    proc = fake_proc(tmp_path / "v2", "0::/system.slice/job.scope")
    cgroups = tmp_path / "v2" / "cgroup"
    write_files(
        cgroups / "system.slice",
        {
            "memory.max": f"{6 * GIB}\n",
            "memory.current": f"{3 * GIB}\n",
            "memory.stat": f"anon {2 * GIB}\nfile {GIB}\ninactive_file {GIB}\n",
        },
    )
    write_files(cgroups / "system.slice" / "job.scope", {"memory.max": "max\n", "memory.current": "0\n"})
    room, source = memory.available_memory(proc, cgroups)
    assert room == 4 * GIB and "system.slice" in source  # 6 GiB limit, 3 GiB used of which 1 GiB reclaimable cache
    write_files(cgroups / "system.slice", {"memory.max": "max\n"})
    assert memory.available_memory(proc, cgroups) == (16 * GIB, "MemAvailable in /proc/meminfo")

    # cgroup v1 inside a container: /proc/self/cgroup names the host's path; the mount shows the container's own.
    proc = fake_proc(tmp_path / "v1", "4:memory:/docker/0123abcd\n3:cpu,cpuacct:/docker/0123abcd")
    cgroups = tmp_path / "v1" / "cgroup"
    write_files(
        cgroups / "memory",
        {
            "memory.limit_in_bytes": f"{2 * GIB}\n",
            "memory.usage_in_bytes": f"{GIB}\n",
            "memory.stat": "cache 0\ntotal_inactive_file 0\n",
        },
    )
    assert memory.available_memory(proc, cgroups)[0] == GIB
    write_files(cgroups / "memory", {"memory.limit_in_bytes": "9223372036854771712\n"})  # v1's "no limit"
    assert memory.available_memory(proc, cgroups)[0] == 16 * GIB


def test_this_process_and_the_machine_are_measured():
    room, source = memory.available_memory()
    assert 0 < room <= psutil.virtual_memory().total and source
    before = memory.current_usage()
    held = np.ones(256 * 2**20, dtype=np.uint8)  # 256 MiB, written: resident
    assert memory.current_usage() - before > 200 * 2**20
    del held


def config(**changes) -> FeaturesParams:
    return FeaturesParams(**{**SMALL_FEATURES, "image_size": 256, "batch_size": 64, **changes})


def test_the_defaults_fit_an_ordinary_laptop():
    # An 8 GB laptop with a browser open offers about 4 GiB; 8 decoding workers; Caltech-101's 5,485 train images.
    memory.check_fits(config(), largest_part=5485, workers=8, offer=(4 * GIB, "MemAvailable"))
    # A 16 GB laptop with 16 cores: 16 decoding workers.
    memory.check_fits(config(), largest_part=5485, workers=16, offer=(8 * GIB, "MemAvailable"))


def test_image_size_4096_is_refused_on_a_16gb_laptop_naming_values_that_fit():
    offer = (12 * GIB, "MemAvailable in /proc/meminfo")  # a 16 GB laptop
    with pytest.raises(StageError) as caught:
        memory.check_fits(config(image_size=4096), largest_part=12, workers=8, offer=offer)
    message = str(caught.value)
    assert message.startswith("features.image_size 4096 with features.batch_size 64 would need about")
    assert "12.0 GiB is available (MemAvailable in /proc/meminfo)" in message
    batch = int(message.split("features.batch_size to ")[1].split()[0])
    size = int(message.split("features.image_size to ")[1].split()[0])
    memory.check_fits(config(image_size=4096, batch_size=batch), largest_part=12, workers=8, offer=offer)  # fits
    memory.check_fits(config(image_size=size), largest_part=12, workers=8, offer=offer)
    with pytest.raises(StageError):  # the largest that fit: one more does not
        memory.check_fits(config(image_size=4096, batch_size=batch + 1), largest_part=12, workers=8, offer=offer)
    with pytest.raises(StageError):
        memory.check_fits(config(image_size=size + 32), largest_part=12, workers=8, offer=offer)


def test_fine_tuning_is_checked_for_its_training_peak_naming_finetune_batch_size(monkeypatch):
    monkeypatch.setattr(memory, "current_usage", lambda: 0)  # what this test process holds is not the stage's
    offer = (3 * GIB, "MemAvailable in /proc/meminfo")
    memory.check_fits(config(), largest_part=5485, workers=8, offer=offer)  # the features stage fits
    with pytest.raises(StageError) as caught:  # training a batch of 64 at 256 px does not
        finetune_memory.check_fits(config(), 5485, False, batch_size=64, unfreeze=1, workers=8, offer=offer)
    message = str(caught.value)
    assert message.startswith("features.image_size 256 with finetune.batch_size 64 would need about")
    batch = int(message.split("finetune.batch_size to ")[1].split()[0])
    finetune_memory.check_fits(config(), 5485, False, batch_size=batch, unfreeze=1, workers=8, offer=offer)
    with pytest.raises(StageError):  # unfreezing most of the backbone needs more again
        finetune_memory.check_fits(config(), 5485, False, batch_size=batch, unfreeze=16, workers=8, offer=offer)


def peak_of_stage(project: Path) -> int:
    """Run the features stage under a fresh Python that reports its children's peak resident memory, in bytes
    (this process's own children would include every earlier subprocess of the session)."""
    import subprocess

    command, env = stage_command("features", *FEATURES_ARGS)
    measure = (
        "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", measure, *command], cwd=project, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip().splitlines()[-1]) * 1024


@pytest.mark.e2e
def test_an_image_size_the_machine_cannot_hold_stops_before_any_work(tmp_path):
    """The issue's case (image_size 4096 on 12 images), scaled to this machine: twice its memory."""
    import subprocess

    project = features_project(tmp_path / "project", per_class=4)  # 12 images
    largest_part = max(len(Path(p).read_text().splitlines()) - 1 for p in (project / "data" / "split").glob("*.csv"))
    total = psutil.virtual_memory().total
    # ResNet50 keeps about 200 bytes per input pixel alive (docs/memory.md).
    size = 32 * math.ceil(math.sqrt(2 * total / (largest_part * 200)) / 32)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["features"].update(image_size=size, batch_size=64)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    command, env = stage_command("features", *FEATURES_ARGS)

    def cap_address_space():  # should the check ever fail, the stage cannot take this machine down with it
        resource.setrlimit(resource.RLIMIT_AS, (8 * GIB, 8 * GIB))  # TensorFlow with the model: 2.5 GB

    result = subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=600, preexec_fn=cap_address_space
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: features.image_size {size} with features.batch_size 64 would need"), lines
    assert "set features.batch_size to" in lines[0] or "features.image_size to" in lines[0]
    assert sorted(p.name for p in (project / "data").iterdir()) == ["images", "split"]  # nothing written


@pytest.mark.e2e
def test_the_estimate_covers_the_measured_peak(tmp_path):
    """Honest: above what the stage really uses, and not wildly so (random-init resnet50, 128 px)."""
    project = features_project(tmp_path / "project", per_class=20)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["features"].update(image_size=128, batch_size=16)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    peak = peak_of_stage(project)
    model = memory.estimate("resnet50", "tensorflow", 128, 16, workers=1)["model"]
    assert peak < model < 1.5 * peak, (peak, model)


def test_the_check_runs_before_the_model_is_built(monkeypatch, feature_cache, tmp_path):
    from stages.features import extract_features

    def refuse(*args, **kwargs):
        raise StageError("no room")

    monkeypatch.setattr(memory, "check_fits", refuse)
    built = []
    monkeypatch.setattr("transfer.features.backbones.build_extractor", lambda *a: built.append(a))
    with pytest.raises(StageError, match="no room"):
        extract_features(
            feature_cache["images"], feature_cache["split"], tmp_path / "f", FeaturesParams(**SMALL_FEATURES)
        )
    assert built == [] and not (tmp_path / "f").exists()
