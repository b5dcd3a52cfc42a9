"""The features stage as `dvc repro` runs it, timed on this machine: `python -m stages.features` over generated images
at the default features.image_size and features.batch_size (params.yaml), resnet50 with random-init weights (the
ImageNet weights cost the same time per image; they cannot be downloaded here).

    python -m benchmarks.features_stage [--images 640] [--out benchmarks/results/features_cpu.json]

Records the stage's own figure (its log line: images over the seconds from the first batch to the last feature
written) and the wall time of the whole command (Python, Keras import, model build included). The README's CPU
estimate for Caltech-101 and `tools.verify --rerun`'s time estimate read stage_images_per_s from this file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from synthetic.datasets import make_image_folders
from synthetic.repos import ROOT, subprocess_env


def run(images: int, workdir: Path) -> dict:
    from stages.split import list_images, split_images, write_manifests

    defaults = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    features = {**defaults["features"], "backbone": "resnet50", "weights": None}
    classes = 10
    make_image_folders(
        workdir / "images", n_classes=classes, per_class=images // classes, size=320, seed=0, extras=False
    )
    write_manifests(split_images(list_images(workdir / "images"), 0.2, 0.2, 0), workdir / "split")
    (workdir / "params.yaml").write_text(yaml.safe_dump({**defaults, "features": features}), encoding="utf-8")
    command = [sys.executable, "-m", "stages.features", "images", "split", "features"]
    env = {**subprocess_env(), "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "-1"}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"the features stage failed:\n{result.stderr[-3000:]}")
    found = re.search(r"features: (\d+) images in ([\d.]+) s", result.stdout)
    if found is None:
        raise SystemExit(f"no timing line in the stage's output:\n{result.stdout}\n{result.stderr}")
    n, seconds = int(found.group(1)), float(found.group(2))
    return {
        "images": n,
        "image_size": features["image_size"],
        "batch_size": features["batch_size"],
        "backbone": "resnet50",
        "backend": features["backend"],
        "stage_seconds": round(seconds, 2),
        "stage_images_per_s": round(n / seconds, 2),
        "command_seconds": round(wall, 2),
        "start_up_seconds": round(wall - seconds, 2),
    }


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (Linux), else the machine type."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=640, help="generated images (10 classes)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "features_cpu.json")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]  # other work on the machine slows the figure: say how busy it was
    with tempfile.TemporaryDirectory(prefix="features-stage-") as scratch:
        figures = run(args.images, Path(scratch))
    figures.update(
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        machine={
            "cpu": cpu_name(),
            "cores_usable": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "load_average_1min_before": load,
        },
    )
    args.out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
