"""The data audit's time and peak memory on Caltech-101's shape: 8,677 images x 2,048 features in 101 classes of
31 to 800 images each, with near-duplicates and label errors planted.

The features are synthetic and clustered (a centre per class plus noise, clipped at 0 like pooled ReLU
activations), written as the features stage writes them, with a split made by the split stage's own function. The
audit stage then runs as `dvc repro` runs it, each run a fresh process: wall time, peak resident memory (the
process's maximum RSS) and the 1-minute load average before it, beside the audit's own memory estimate
(transfer/audit/memory.py), and once its phases timed one by one (benchmarks/audit_phases.py). There is no
data/images folder: the pictures show each image as "cannot show" (decoding the 32 images they show is a few
milliseconds more).

    python -m benchmarks.audit                 # -> benchmarks/results/audit_cpu.json
    python -m benchmarks.audit --runs 1 --name audit_quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "work" / "audit"


def class_sizes(total: int, classes: int, smallest: int, largest: int) -> list[int]:
    """`classes` sizes from `smallest` to `largest` summing to `total`, evenly spaced in log size after t -> t**power
    on an even grid t in [0, 1] (the power found by bisection), the rounding remainder given to middle classes:
    a long tail like Caltech-101's, from its published count, smallest and largest class alone."""
    grid = np.linspace(0, 1, classes)
    low, high = 0.01, 100.0
    for _ in range(200):
        power = (low * high) ** 0.5
        if (smallest * (largest / smallest) ** (grid**power)).sum() > total:
            low = power
        else:
            high = power
    sizes = np.floor(smallest * (largest / smallest) ** (grid**power)).astype(int)
    middle = classes // 2
    for step in range(total - sizes.sum()):
        sizes[middle + step % (classes // 4)] += 1
    return sizes.tolist()


def write_features(work: Path, sizes: list[int], width: int, duplicates: int, label_errors: int, seed: int) -> dict:
    """Features, labels, classes.json and the split, as the features and split stages write them; what was planted."""
    from stages.split import split_images, write_manifests

    rng = np.random.default_rng(seed)
    classes = [f"class_{i:03d}" for i in range(len(sizes))]
    labels = np.repeat(np.arange(len(sizes)), sizes)
    centres = rng.normal(0, 0.15, (len(sizes), width)).astype(np.float32)
    features = np.maximum(centres[labels] + rng.normal(0, 1, (len(labels), width)).astype(np.float32), 0)
    originals = rng.choice(len(labels), duplicates, replace=False)
    features = np.concatenate([features, features[originals] + rng.normal(0, 0.05, (duplicates, width))])
    labels = np.concatenate([labels, labels[originals]])
    paths = [f"{classes[label]}/image_{i:05d}.jpg" for i, label in enumerate(labels)]
    given = labels.copy()
    flipped = rng.choice(len(labels) - duplicates, label_errors, replace=False)  # among the originals
    given[flipped] = (labels[flipped] + rng.integers(1, len(sizes), label_errors)) % len(sizes)
    frame = pd.DataFrame({"path": paths, "label": [classes[g] for g in given]})
    parts = split_images(frame, 0.2, 0.2, seed)
    write_manifests(parts, work / "split")
    row = {path: i for i, path in enumerate(paths)}
    for part, manifest in parts.items():
        (work / "features" / part).mkdir(parents=True, exist_ok=True)
        rows = [row[path] for path in manifest["path"]]
        np.save(work / "features" / part / "features.npy", features[rows].astype(np.float32))
        np.save(work / "features" / part / "labels.npy", given[rows].astype(np.int32))
    (work / "features" / "classes.json").write_text(json.dumps(classes))
    duplicate_paths = [[paths[i], paths[len(labels) - duplicates + n]] for n, i in enumerate(originals)]
    return {"duplicates": duplicate_paths, "label_errors": [paths[i] for i in flipped]}


# Runs a module as `python -m` does, then prints the process's peak resident memory (VmHWM) on stderr's last line.
PEAK = (
    "import runpy, sys; module = sys.argv[1]; sys.argv = sys.argv[1:]; runpy.run_module(module, run_name='__main__', "
    "alter_sys=True); status = open('/proc/self/status').read(); "
    "print('peak', int(status.split('VmHWM:')[1].split()[0]) * 1024, file=sys.stderr)"
)


def run(module: str, args: list[str], work: Path) -> dict:
    """`python -m module args` in a fresh process: wall seconds, peak resident memory, the load average before."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    command = [sys.executable, "-c", PEAK, module, *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"python -m {module} failed:\n{result.stderr[-4000:]}")
    peak = int(result.stderr.strip().splitlines()[-1].split()[1])
    measured = {"seconds": round(seconds, 2), "peak_rss_bytes": peak, "load_average_before_1min": round(load, 2)}
    return measured | ({"phases_seconds": json.loads(result.stdout)} if module == "benchmarks.audit_phases" else {})


def found(work: Path, planted: dict) -> dict:
    pairs = pd.read_csv(work / "audit" / "duplicates.csv")
    issues = pd.read_csv(work / "audit" / "label_issues.csv")
    listed = {frozenset(pair) for pair in zip(pairs.path_a, pairs.path_b, strict=True)}
    truth = {frozenset(pair) for pair in planted["duplicates"]}
    errors = set(planted["label_errors"])
    return {
        "duplicates_planted": len(truth),
        "duplicates_found": len(listed & truth),
        "duplicate_pairs_listed": len(listed),
        "label_errors_planted": len(errors),
        "label_errors_found": len(set(issues.path) & errors),
        "label_issues_listed": len(issues),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8677)
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--smallest", type=int, default=31)
    parser.add_argument("--largest", type=int, default=800)
    parser.add_argument("--width", type=int, default=2048, help="features per image")
    parser.add_argument("--duplicates", type=int, default=20)
    parser.add_argument("--label-errors", type=int, default=87, help="images given another class (default: 1%%)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--name", default="audit_cpu", help="writes benchmarks/results/NAME.json")
    args = parser.parse_args()

    from transfer.audit.memory import estimate

    sizes = class_sizes(args.images - args.duplicates, args.classes, args.smallest, args.largest)
    WORK.mkdir(parents=True, exist_ok=True)
    planted = write_features(WORK, sizes, args.width, args.duplicates, args.label_errors, seed=0)
    audit_params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    (WORK / "params.yaml").write_text(yaml.safe_dump(audit_params), encoding="utf-8")
    phases = run("benchmarks.audit_phases", [], WORK)
    print(f"phases: {phases}", flush=True)
    runs = []
    for index in range(args.runs):
        runs.append(run("stages.audit", ["features", "split", "images", "audit"], WORK))
        print(f"run {index + 1}: {runs[-1]}", flush=True)
    result = {
        "what": "python -m stages.audit on synthetic clustered features of Caltech-101's shape, fresh process per run",
        "images": args.images,
        "features_per_image": args.width,
        "classes": args.classes,
        "class_sizes": {"smallest": min(sizes), "largest": max(sizes), "before_duplicates": sum(sizes)},
        "audit_params": audit_params["audit"],
        "runs": runs,
        "phases": phases,
        "memory_estimate_bytes": estimate(args.images, args.width),
        "planted": found(WORK, planted),
        "machine": {
            "cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)),
            "processor": next(
                (
                    line.split(":", 1)[1].strip()
                    for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")
                ),
                platform.processor(),
            ),
            "python": platform.python_version(),
            **{name: metadata.version(name) for name in ("numpy", "scikit-learn", "cleanlab")},
        },
    }
    out = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"-> {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
