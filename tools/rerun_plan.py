"""What `python -m tools.verify --rerun [STAGE]` will run, and roughly how long it takes on this machine, said before
it starts.

The stages are STAGE and every stage it depends on (all stages of every pipeline without STAGE), in pipeline order.
The time is an estimate from the committed dvc.lock (the number of images extract kept, the params each stage ran
with) and the throughput measured on a 2-core CPU under benchmarks/results/ (the features stage at 256 px, the
fine-tuning step against the forward pass), scaled by image size and this machine's cores. Stages with no measured
rate (the head, the split) are counted as the minute or so that a Python and Keras start-up and small work take.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

# Seconds a stage costs beyond its images: DVC, Python and (for these) a Keras import, on 2 CPU cores.
START_UP = {"features": 15, "train": 20, "export": 25, "finetune": 25}
OTHER_STAGE = 5
RESULTS = ("benchmarks", "results")


def stages_to_run(repo, target: str | None) -> list[str]:
    """The stages `dvc repro --force [target]` runs, in the order their dvc.yaml lists them (top pipeline first)."""
    from tools.lock_check import stage_name

    root = Path(repo.root_dir)
    every = [stage_name(stage, root) for stage in repo.index.stages if getattr(stage, "cmd", None)]
    if not target:
        return every
    with contextlib.chdir(root):  # DVC reads a target relative to the working folder, as `dvc repro` in root does
        chosen = {stage_name(stage, root) for stage in repo.stage.collect(target, with_deps=True)}
    return [name for name in every if name in chosen]


def _measured(root: Path) -> tuple[float | None, float | None]:
    """(features stage images/s at 256 px on 2 cores, a fine-tuning step's time over the forward pass's), or None
    where the results files are not in this checkout."""
    folder = root.joinpath(*RESULTS)
    try:
        stage = json.loads((folder / "features_cpu.json").read_text(encoding="utf-8"))
        rate = float(stage["stage_images_per_s"]) * (stage["image_size"] / 256) ** 2
    except (OSError, ValueError, KeyError, TypeError):
        rate = None
    try:
        runs = {r["config"]: r for r in json.loads((folder / "finetune_cpu.json").read_text(encoding="utf-8"))["runs"]}
        ratio = runs["forward"]["images_per_s"] / runs["finetune_top1"]["images_per_s"]
    except (OSError, ValueError, KeyError, TypeError):
        ratio = None
    return rate, ratio


def _locked(lock: dict, stage: str, section: str, key: str, default=None):
    params = ((lock.get(stage) or {}).get("params") or {}).get("params.yaml") or {}
    value = params.get(f"{section}.{key}", (params.get(section) or {}).get(key) if section in params else None)
    return default if value is None else value


def _images(lock: dict) -> int | None:
    outs = (lock.get("extract") or {}).get("outs") or []
    return next((out.get("nfiles") for out in outs if out.get("path") == "data/images"), None)


def estimate(root: Path, lock: dict, stages: list[str], cores: int | None = None) -> dict[str, float | None]:
    """Seconds per stage (None: no basis for a figure, e.g. the download, which depends on the network)."""
    rate_256, step_ratio = _measured(root)
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    images = _images(lock)
    size = _locked(lock, "features", "features", "image_size", 256)
    rate = rate_256 * (256 / size) ** 2 * max(cores, 1) / 2 if rate_256 else None  # CPU time per pixel, per core
    seconds: dict[str, float | None] = {}
    for stage in stages:
        start = START_UP.get(stage, OTHER_STAGE)
        if stage == "download":
            seconds[stage] = None
        elif stage == "features":
            seconds[stage] = start + images / rate if images and rate else None
        elif stage == "finetune":
            epochs = _locked(lock, "finetune", "finetune", "epochs", 0)
            test, val = _locked(lock, "split", "split", "test", 0.2), _locked(lock, "split", "split", "val", 0.2)
            if not epochs:
                seconds[stage] = OTHER_STAGE  # finetune.epochs 0: no Keras, a second's work
            elif images and rate and step_ratio:
                train, validation = images * (1 - test) * (1 - val), images * (1 - test) * val
                seconds[stage] = start + epochs * (train * step_ratio + validation) / rate
            else:
                seconds[stage] = None
        else:
            seconds[stage] = start
    return seconds


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe(root: Path, lock: dict, stages: list[str]) -> str:
    """One paragraph for the user: the stages, then the rough time of each that takes long, and the total."""
    seconds = estimate(root, lock, stages)
    known = [s for s in seconds.values() if s is not None]
    total = _duration(sum(known)) if known else "unknown"
    long = [f"{stage} ~{_duration(s)}" for stage, s in seconds.items() if s is not None and s >= 60]
    unknown = [stage for stage, s in seconds.items() if s is None]
    text = f"will rerun from scratch: {', '.join(stages)}; roughly {total} on this machine's CPU"
    if long:
        text += f" ({', '.join(long)})"
    if unknown:
        text += f", plus {', '.join(unknown)} (no estimate: " + (
            "the network" if unknown == ["download"] else "no data"
        )
        text += ")"
    return text + ". An estimate from the rates measured on 2 CPU cores (benchmarks/results/); a GPU is faster."
