"""Does the feature cache pay? Whole processes, wall clock, on the same generated images, as a user runs them.

    python -m benchmarks.benchmark                 # 2,000 images at 128 px, 3 backends: 15-20 minutes on 2 cores
    python -m benchmarks.benchmark --quick         # a smoke run: 200 images of 64 px (~7 minutes; no verdict)
    python -m benchmarks.benchmark --classes 20 --per-class 100 --size 128 --memory-sets 1000 4000 --name cpu
    python -m benchmarks.benchmark --backends tensorflow jax   # the other backends to set beside TensorFlow

It generates class folders of JPEGs (synthetic.datasets) and splits them with the split stage's own
functions, then measures:
  (1) the tutorial's way: benchmarks/tutorial_way.py, one Keras model (frozen ResNet50 + the tutorial's
      head) trained 5 epochs from the JPEG files, validated every epoch, evaluated on the test split;
  (2) this pipeline: `python -m stages.features`, `stages.train`, `stages.evaluate` as dvc.yaml runs them,
      in a scratch folder whose params.yaml has the same image size, 5 epochs, features.backend tensorflow (the
      default) and features.weights a random-init ResNet50 weights file that every backend and (1) load alike;
  (3) a head-only re-run after a train.* change (train.learning_rate halved): train and evaluate;
  (4) extraction throughput: images/s from JPEG files to saved features (the features stage's log line),
      against the stage's own Extractor on in-memory uint8 batches of the same shapes (benchmarks.throughput);
  (5) the features stage's peak resident memory on a small and a large image set (a fresh process each,
      read from getrusage(RUSAGE_CHILDREN).ru_maxrss of a wrapper process: the largest process of the stage,
      its main one; the decoding workers are smaller and hold nothing that grows);
  (6) per other backend (features.backend jax, torch): (2) and (4) again with that backend's features stage and
      model (train and evaluate run on TensorFlow, as in the pipeline), and how far its features are from
      TensorFlow's on the same images; a backend that is not installed is reported as such;
plus the start-up of a bare Python and of `import keras` (on TensorFlow).

It prints a table of the figures, the ratios measured side by side in this one run, their targets and
whether each is met, and the machine; all of it goes to benchmarks/results/<name>.json. The figures are
only meaningful on an otherwise idle machine: the load average is recorded before every step.
Generated data and scratch folders live in benchmarks/work/ (git-ignored); images are reused between runs.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from synthetic import repos as scratch_repo

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work"
RESULTS = ROOT / "benchmarks" / "results"

# Targets on the reference machine (2 CPU cores, 128 px, ~2,000 images); ratios are measured in one run.
TARGETS = {
    "pipeline_speedup": (">=", 2.5, "(1) tutorial / (2) features+train+evaluate"),
    "head_only_speedup": (">=", 8.0, "(1) tutorial / (3) train+evaluate after a train.* change"),
    "extraction_vs_model": (">=", 0.9, "(4) JPEG files -> saved features img/s / model-only img/s"),
    "memory_growth_pct": ("<", 10.0, "(5) features-stage peak RSS growth, small -> large set, %"),
}
# The default backend and the others the features stage can run on (transfer/core/params.py BACKENDS).
DEFAULT_BACKEND = "tensorflow"
OTHER_BACKENDS = ("jax", "torch")
WEIGHTS_SEED = 3
FEATURES_LINE = re.compile(r"features: (\d+) images in ([\d.]+) s \((\d+) img/s\) on (.+)")
PEAK_RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[1:])\n"
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


class Runner:
    """Runs child processes with the project on PYTHONPATH, logs each one, and records wall time and load."""

    def __init__(self, logs: Path, code: Path | None = None):
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)
        paths = [str(code)] if code else []  # another copy of stages/ to compare (--code)
        self.env["PYTHONPATH"] = os.pathsep.join(paths + [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        self.env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        # Bare `import keras` (start-up, the tutorial's way) is on TensorFlow; the stages choose their own backend.
        self.env.update(PYTHONUNBUFFERED="1", DVC_NO_ANALYTICS="1", KERAS_BACKEND=DEFAULT_BACKEND)
        self.load = {}

    def __call__(self, step: str, args: list[str], cwd: Path) -> tuple[float, str, str]:
        self.load[step] = round(os.getloadavg()[0], 2)
        print(f"  {step} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        result = subprocess.run([str(a) for a in args], cwd=cwd, env=self.env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        (self.logs / f"{step}.log").write_text(
            f"$ {' '.join(map(str, args))}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
            sys.exit(f"benchmark: {step} exited {result.returncode}; log {self.logs / f'{step}.log'}\n{tail}")
        print(f"  {step}: {seconds:.1f} s", file=sys.stderr, flush=True)
        return seconds, result.stdout, result.stderr


def machine() -> dict:
    import psutil

    model = platform.processor() or platform.machine()
    try:
        names = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        model = names[0] if names else model
    except OSError:
        pass
    versions = {}
    for package in ("tensorflow", "keras", "numpy", "jax", "torch"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **versions,
    }


def make_images(classes: int, per_class: int, size: int) -> Path:
    """Generated class folders of JPEGs, reused between runs (keyed by their settings)."""
    from synthetic.datasets import make_image_folders

    folder = WORK / f"images-{classes}x{per_class}-{size}px"
    if not (folder / ".complete").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        print(f"generating {classes * per_class} images of {size}x{size} in {folder} ...", file=sys.stderr, flush=True)
        make_image_folders(folder, classes, per_class, size, seed=0, extras=False)
        (folder / ".complete").write_text("done\n")
    return folder


def make_split(images: Path, per_class: int, out: Path) -> dict[str, int]:
    """The split stage's own split of the first per_class images of each class; returns the part sizes."""
    from stages.split import list_images, split_images, write_manifests

    listed = list_images(images)
    subset = listed.groupby("label", sort=True).head(per_class).reset_index(drop=True)
    parts = split_images(subset, test=0.2, val=0.2, seed=42)
    write_manifests(parts, out)
    return {part: len(frame) for part, frame in parts.items()}


def make_weights(runner: Runner, python: str) -> Path:
    """A random-init ResNet50 weights file (no top), saved once on TensorFlow and reused: every backend and the
    tutorial's way load the same weights, so their features can be compared (random init differs per backend)."""
    path = WORK / f"resnet50-random-seed{WEIGHTS_SEED}.weights.h5"
    if not path.is_file():
        WORK.mkdir(parents=True, exist_ok=True)
        script = (
            "import sys, keras\n"
            f"keras.utils.set_random_seed({WEIGHTS_SEED})\n"
            "base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3))\n"
            "base.save_weights(sys.argv[1])\n"
        )
        tmp = path.with_name(f".{path.name}.tmp.weights.h5")
        runner("0_weights", [python, "-c", script, tmp], ROOT)
        tmp.replace(path)
    return path


def write_params(
    folder: Path,
    image_size: int,
    batch_size: int,
    epochs: int,
    weights: Path,
    backend: str = DEFAULT_BACKEND,
    **train,
) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["features"].update(weights=str(weights), image_size=image_size, batch_size=batch_size, backend=backend)
    params["train"].update(epochs=epochs, **train)
    folder.mkdir(parents=True, exist_ok=True)
    scratch_repo.write_params(folder, params)


def features_line(stdout: str) -> dict:
    match = FEATURES_LINE.search(stdout)
    if not match:
        sys.exit(f"benchmark: no `features: N images in S s` line in the features stage's output:\n{stdout}")
    images, seconds = int(match.group(1)), float(match.group(2))
    return {"images": images, "seconds": seconds, "img_s": images / seconds, "device": match.group(4).strip()}


def peak_rss_kb(stderr: str) -> int:
    return int(re.findall(r"PEAK_RSS_KB (\d+)", stderr)[-1])


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def met(key: str, value: float) -> bool:
    op, target, _ = TARGETS[key]
    return value >= target if op == ">=" else value < target


def run_pipeline(runner: Runner, python: str, step: str, folder: Path, images: Path, split: Path) -> dict:
    """features, train and evaluate in folder, as dvc.yaml runs them; their seconds and the test accuracy."""
    features_s, out, _ = runner(
        f"{step}_features", [python, "-m", "stages.features", images, split, "data/features"], folder
    )
    train_s, _, _ = runner(
        f"{step}_train", [python, "-m", "stages.train", "data/features", "models/head.keras", "metrics/train"], folder
    )
    evaluate_s, _, _ = runner(
        f"{step}_evaluate",
        [python, "-m", "stages.evaluate", "data/features", split, images, "models/head.keras", "metrics"],
        folder,
    )
    test = json.loads((folder / "metrics" / "test.json").read_text())
    return {
        "seconds": features_s + train_s + evaluate_s,
        "features_s": features_s,
        "train_s": train_s,
        "evaluate_s": evaluate_s,
        "test_accuracy": test["accuracy"],
        "extraction": features_line(out),
    }


def model_only(
    runner: Runner, python: str, step: str, backend: str, weights: Path, args, split: dict, cwd: Path
) -> dict:
    """benchmarks.throughput on backend, with the batch shapes of the features stage's run on split."""
    _, out, _ = runner(
        f"{step}_model_only",
        [
            python,
            "-m",
            "benchmarks.throughput",
            "--backend",
            backend,
            "--weights",
            weights,
            "--image-size",
            args.size,
            "--batch-size",
            args.batch_size,
            "--parts",
            *split.values(),
        ],
        cwd,
    )
    return json.loads(out.strip().splitlines()[-1])


def compare_features(reference: Path, other: Path) -> dict:
    """How far one backend's features are from the reference's, over every part: the largest absolute
    difference, and the largest relative to the reference's largest magnitude in the part."""
    import numpy as np

    worst_abs, worst_rel = 0.0, 0.0
    for part in ("train", "val", "test"):
        a = np.load(reference / part / "features.npy")
        b = np.load(other / part / "features.npy")
        if a.shape != b.shape:
            return {"error": f"{part}: shapes differ, {a.shape} vs {b.shape}"}
        diff = float(np.abs(a.astype(np.float64) - b).max()) if a.size else 0.0
        scale = float(np.abs(a).max()) if a.size else 0.0
        worst_abs, worst_rel = max(worst_abs, diff), max(worst_rel, diff / scale if scale else 0.0)
    return {"max_abs_diff": worst_abs, "max_rel_diff": worst_rel}


def run(args: argparse.Namespace) -> dict:
    work = WORK / args.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    runner = Runner(work / "logs", args.code)
    python = sys.executable
    load_start = os.getloadavg()

    # Data: one folder of images; the main set and the memory sets are per-class prefixes of it.
    small_per_class, large_per_class = (max(3, round(n / args.classes)) for n in args.memory_sets)
    images = make_images(args.classes, max(args.per_class, small_per_class, large_per_class), args.size)
    split = make_split(images, args.per_class, work / "split")
    n_images = sum(split.values())
    weights = make_weights(runner, python)
    print(
        f"benchmark {args.name}: {n_images} images ({split}) at {args.size} px, batch {args.batch_size}",
        file=sys.stderr,
        flush=True,
    )

    # Start-up: a bare interpreter, then `import keras` (TensorFlow), after one import to warm the file cache.
    if not args.quick:
        runner("warm_up_import_keras", [python, "-c", "import keras"], ROOT)
    bare, _, _ = runner("startup_python", [python, "-c", "pass"], ROOT)
    keras_import, _, _ = runner("startup_import_keras", [python, "-c", "import keras"], ROOT)

    # (1) The tutorial's way.
    tutorial_dir = work / "tutorial"
    tutorial_dir.mkdir()
    tutorial_s, out, _ = runner(
        "1_tutorial_way",
        [
            python,
            ROOT / "benchmarks" / "tutorial_way.py",
            images,
            work / "split",
            "--image-size",
            args.size,
            "--epochs",
            args.epochs,
            "--weights",
            weights,
        ],
        tutorial_dir,
    )
    tutorial = json.loads(out.strip().splitlines()[-1])

    # (2) The pipeline: features, train, evaluate, exactly as dvc.yaml runs them.
    pipeline = work / "pipeline"
    write_params(pipeline, args.size, args.batch_size, args.epochs, weights)
    main_run = run_pipeline(runner, python, "2", pipeline, images, work / "split")
    extraction = main_run["extraction"]

    # (3) Head-only re-run after a train.* change: DVC would rerun train and evaluate only.
    params = yaml.safe_load((pipeline / "params.yaml").read_text())
    changed = {"learning_rate": params["train"]["learning_rate"] / 2}
    write_params(pipeline, args.size, args.batch_size, args.epochs, weights, **changed)
    train2_s, _, _ = runner(
        "3_train", [python, "-m", "stages.train", "data/features", "models/head.keras", "metrics/train"], pipeline
    )
    evaluate2_s, _, _ = runner(
        "3_evaluate",
        [python, "-m", "stages.evaluate", "data/features", work / "split", images, "models/head.keras", "metrics"],
        pipeline,
    )
    head_only_test = json.loads((pipeline / "metrics" / "test.json").read_text())

    # (4) The model alone, same batch shapes, in-memory images.
    model = model_only(runner, python, "4", DEFAULT_BACKEND, weights, args, split, work)

    # (6) The other backends: the features stage and the model alone on each; train and evaluate as in (2).
    backends = {}
    for name in args.backends:
        if name == DEFAULT_BACKEND:
            continue
        if importlib.util.find_spec(name) is None:
            print(f"  6_{name}: not installed, skipped", file=sys.stderr, flush=True)
            backends[name] = {"status": "not installed"}
            continue
        folder = work / f"pipeline_{name}"
        write_params(folder, args.size, args.batch_size, args.epochs, weights, backend=name)
        other = run_pipeline(runner, python, f"6_{name}", folder, images, work / "split")
        other_model = model_only(runner, python, f"6_{name}", name, weights, args, split, work)
        backends[name] = {
            "status": "measured",
            "device": other["extraction"]["device"],
            "pipeline": {key: value for key, value in other.items() if key != "extraction"},
            "end_to_end_img_s": other["extraction"]["img_s"],
            "end_to_end_s": other["extraction"]["seconds"],
            "model_only_img_s": other_model["model_only_img_s"],
            "model_only_steady_img_s": other_model["model_only_steady_img_s"],
            "import_s": other_model.get("import_s"),
            "version": other_model.get("backend_version"),
            "features_vs_tensorflow": compare_features(pipeline / "data" / "features", folder / "data" / "features"),
            "ratios": {
                "pipeline_speedup": ratio(tutorial_s, other["seconds"]),
                "extraction_vs_model": ratio(other["extraction"]["img_s"], other_model["model_only_img_s"]),
            },
        }
        if not args.keep:
            shutil.rmtree(folder / "data", ignore_errors=True)

    # (5) Peak RSS of the features stage on a small and a large set, a fresh process each.
    memory = {}
    for label, per_class in (("small", small_per_class), ("large", large_per_class)):
        folder = work / f"memory_{label}"
        sizes = make_split(images, per_class, folder / "split")
        write_params(folder, args.size, args.batch_size, args.epochs, weights)
        seconds, out, err = runner(
            f"5_features_{label}",
            [
                python,
                "-c",
                PEAK_RSS_WRAPPER,
                python,
                "-m",
                "stages.features",
                images,
                folder / "split",
                "data/features",
            ],
            folder,
        )
        memory[label] = {
            "images": sum(sizes.values()),
            "peak_rss_mb": peak_rss_kb(err) / 1024,
            "seconds": seconds,
            "img_s": features_line(out)["img_s"],
        }
        if not args.keep:
            shutil.rmtree(folder / "data", ignore_errors=True)

    pipeline_s = main_run["seconds"]
    head_only_s = train2_s + evaluate2_s
    ratios = {
        "pipeline_speedup": ratio(tutorial_s, pipeline_s),
        "head_only_speedup": ratio(tutorial_s, head_only_s),
        "extraction_vs_model": ratio(extraction["img_s"], model["model_only_img_s"]),
        "memory_growth_pct": 100 * (ratio(memory["large"]["peak_rss_mb"], memory["small"]["peak_rss_mb"]) - 1),
    }
    load_end = os.getloadavg()
    result = {
        "name": args.name,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "code": str(args.code) if args.code else None,
        "settings": {
            "classes": args.classes,
            "per_class": args.per_class,
            "images": n_images,
            "split": split,
            "image_size": args.size,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "memory_sets": [memory["small"]["images"], memory["large"]["images"]],
            "weights": f"random init (seed {WEIGHTS_SEED}), one file for every backend and the tutorial's way",
            "backends": args.backends,
            "head_only_change": {f"train.{k}": v for k, v in changed.items()},
        },
        "machine": {**machine(), "device": extraction["device"]},
        "load_average": {
            "start": [round(x, 2) for x in load_start],
            "end": [round(x, 2) for x in load_end],
            "before_step_1min": runner.load,
        },
        "startup_s": {"python": bare, "import_keras": keras_import, "import_keras_in_worker": model.get("import_s")},
        "tutorial": {"seconds": tutorial_s, "inside": tutorial["seconds"], "test_accuracy": tutorial["test_accuracy"]},
        "pipeline": {key: value for key, value in main_run.items() if key != "extraction"},
        "head_only": {
            "seconds": head_only_s,
            "train_s": train2_s,
            "evaluate_s": evaluate2_s,
            "test_accuracy": head_only_test["accuracy"],
        },
        "throughput": {
            "end_to_end_img_s": extraction["img_s"],
            "end_to_end_s": extraction["seconds"],
            "model_only_img_s": model["model_only_img_s"],
            "model_only_steady_img_s": model["model_only_steady_img_s"],
            "model_build_s": model["build_s"],
            "images": extraction["images"],
        },
        "memory": memory,
        "other_backends": backends,
        "ratios": ratios,
        "targets": {key: {"op": op, "value": value, "what": what} for key, (op, value, what) in TARGETS.items()},
        "met": {key: met(key, value) for key, value in ratios.items()},
    }
    if not args.keep:
        shutil.rmtree(pipeline / "data", ignore_errors=True)
    return result


def backend_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """(6): each other backend beside TensorFlow's (2) and (4); reported, no targets."""
    rows = []
    for name, b in r["other_backends"].items():
        if b["status"] != "measured":
            rows.append((f"(6) features.backend {name}", b["status"], "", ""))
            continue
        p, diff = b["pipeline"], b["features_vs_tensorflow"]
        rows += [
            (
                f"(6) features.backend {name}: features + train + evaluate",
                f"{p['seconds']:.1f} s ({p['features_s']:.1f} + {p['train_s']:.1f} + {p['evaluate_s']:.1f})",
                "",
                "",
            ),
            ("    speed-up (1)/(6)", f"{b['ratios']['pipeline_speedup']:.2f}x", "", ""),
            (
                "    extraction / model alone",
                f"{b['end_to_end_img_s']:.1f} / {b['model_only_img_s']:.1f} img/s "
                f"(steady {b['model_only_steady_img_s']:.1f})",
                "",
                "",
            ),
            ("    ratio", f"{b['ratios']['extraction_vs_model']:.3f}", "", ""),
            (
                "    features vs TensorFlow's: max |diff| (relative)",
                f"{diff['max_abs_diff']:.2e} ({diff['max_rel_diff']:.1e})" if "max_abs_diff" in diff else diff["error"],
                "",
                "",
            ),
        ]
    return rows


def table(r: dict) -> str:
    m, t, p, h, q, mem, ratios = (
        r["machine"],
        r["tutorial"],
        r["pipeline"],
        r["head_only"],
        r["throughput"],
        r["memory"],
        r["ratios"],
    )
    s = r["settings"]

    def check(key: str) -> str:
        op, value, _ = TARGETS[key]
        return f"{op} {value:g}", "yes" if r["met"][key] else "NO"

    rows = [
        ("(1) tutorial's way, 5 epochs from JPEGs", f"{t['seconds']:.1f} s", "", ""),
        (
            "(2) pipeline: features + train + evaluate",
            f"{p['seconds']:.1f} s ({p['features_s']:.1f} + {p['train_s']:.1f} + {p['evaluate_s']:.1f})",
            "",
            "",
        ),
        ("    speed-up (1)/(2)", f"{ratios['pipeline_speedup']:.2f}x", *check("pipeline_speedup")),
        (
            "(3) head-only re-run: train + evaluate",
            f"{h['seconds']:.1f} s ({h['train_s']:.1f} + {h['evaluate_s']:.1f})",
            "",
            "",
        ),
        ("    speed-up (1)/(3)", f"{ratios['head_only_speedup']:.2f}x", *check("head_only_speedup")),
        ("(4) extraction, JPEG files -> saved features", f"{q['end_to_end_img_s']:.1f} img/s", "", ""),
        (
            "    model alone, in-memory tensors",
            f"{q['model_only_img_s']:.1f} img/s (steady "
            + (f"{q['model_only_steady_img_s']:.1f})" if q["model_only_steady_img_s"] else "n/a)"),
            "",
            "",
        ),
        ("    ratio", f"{ratios['extraction_vs_model']:.3f}", *check("extraction_vs_model")),
        (f"(5) features peak RSS, {mem['small']['images']} images", f"{mem['small']['peak_rss_mb']:.0f} MB", "", ""),
        (f"    {mem['large']['images']} images", f"{mem['large']['peak_rss_mb']:.0f} MB", "", ""),
        ("    growth", f"{ratios['memory_growth_pct']:+.1f} %", *check("memory_growth_pct")),
        *backend_rows(r),
        (
            "start-up: python / import keras (TF)",
            f"{r['startup_s']['python']:.2f} s / {r['startup_s']['import_keras']:.1f} s",
            "",
            "",
        ),
        (
            "test accuracy: tutorial / pipeline / head-only",
            f"{t['test_accuracy']:.3f} / {p['test_accuracy']:.3f} / {h['test_accuracy']:.3f}"
            + "".join(
                f" / {name} {b['pipeline']['test_accuracy']:.3f}"
                for name, b in r["other_backends"].items()
                if b["status"] == "measured"
            ),
            "",
            "",
        ),
    ]
    widths = [max(len(row[i]) for row in rows + [("measure", "figure", "target", "met")]) for i in range(4)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    out = [
        f"Benchmark {r['name']}{' (QUICK: smoke run, targets apply to the full run)' if r['quick'] else ''}: "
        f"{s['images']} images at {s['image_size']} px, batch {s['batch_size']}, {s['epochs']} epochs, "
        f"random-init ResNet50",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), {m['ram_gb']} GB RAM, "
        f"TensorFlow {m['tensorflow']}, Keras {m['keras']}, Python {m['python']}, device {m['device']}",
        f"Load average (1 min) before the run {r['load_average']['start'][0]}"
        + (
            "  (BUSY machine: figures distorted)"
            if r["load_average"]["start"][0] > 0.5 * (m["cores_usable"] or 1)
            else ""
        )
        + f", at its end {r['load_average']['end'][0]} (its own work included)",
        "",
        line(("measure", "figure", "target", "met")),
        line(tuple("-" * w for w in widths)),
        *(line(row) for row in rows),
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--classes", type=int, help="image classes (default 20; quick 4)")
    parser.add_argument("--per-class", type=int, help="images per class in the main set (default 100; quick 50)")
    parser.add_argument(
        "--size", type=int, help="side of the generated images and of the model input (default 128; quick 64)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="features.batch_size (default 64)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs for the tutorial and the head (default 5)")
    parser.add_argument(
        "--memory-sets",
        type=int,
        nargs=2,
        metavar=("SMALL", "LARGE"),
        help="image counts for the peak-memory runs (default 1000 4000; quick 100 400)",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        default=[DEFAULT_BACKEND, *OTHER_BACKENDS],
        choices=[DEFAULT_BACKEND, *OTHER_BACKENDS],
        help="Keras backends to measure the features stage on (default all; tensorflow, the default, always runs)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: small counts, tiny images")
    parser.add_argument("--name", help="results go to benchmarks/results/NAME.json (default cpu; quick: quick)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch features under benchmarks/work/")
    parser.add_argument(
        "--code",
        type=Path,
        help="run the stages from DIR/stages instead of this checkout's (before/after comparisons of stage changes)",
    )
    args = parser.parse_args(argv)
    defaults = (
        dict(classes=4, per_class=50, size=64, memory_sets=[100, 400], name="quick")
        if args.quick
        else dict(classes=20, per_class=100, size=128, memory_sets=[1000, 4000], name="cpu")
    )
    fill_defaults(args, defaults)
    if args.size < 32 or args.classes < 2 or args.per_class < 3:
        parser.error("need --size >= 32, --classes >= 2 and --per-class >= 3")
    return save_and_show(args.name, run(args), table)


def fill_defaults(args: argparse.Namespace, defaults: dict) -> None:
    """Options the user left out take the values of the chosen size (full or --quick)."""
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def save_and_show(name: str, result: dict, table) -> dict:
    """Write benchmarks/results/NAME.json and print the table of its figures."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(table(result))
    print(f"\nfigures: {path.relative_to(ROOT)}")
    return result


if __name__ == "__main__":
    main()
