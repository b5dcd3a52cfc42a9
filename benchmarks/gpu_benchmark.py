"""Feature extraction on a GPU: JPEG files -> saved features, end to end, against the model alone.

Prepared for a rented machine with one NVIDIA GPU (made for an H100 with 16 cores) and no internet.
Run it from the repository root, through the wrapper:

    benchmarks/gpu_benchmark.sh                          # 5,000 images of 256x256, batch 64 and 256
    GPU_BENCH_IMAGES=200 benchmarks/gpu_benchmark.sh     # fewer images (also --images N)
    benchmarks/gpu_benchmark.sh --allow-cpu --images 60 --size 64   # a dry run on a machine without a GPU

Needs Python 3.10-3.12 with TensorFlow 2.21 and its CUDA libraries (`pip install "tensorflow[and-cuda]==2.21.0"`,
which also brings ptxas/libdevice for XLA), keras 3.15, numpy, pandas, pillow, pyyaml, tqdm and scikit-learn
(requirements.txt pins them all). Without internet, install from a wheelhouse made elsewhere: see
benchmarks/gpu_benchmark.sh. The script checks these first and stops within seconds, naming what is missing.

Steps (each timed; a failing step is recorded and the others still run):
  1. generate N JPEGs (tools.synthetic's images, in parallel processes) and split them (the split stage's code);
  2. `stage`: the features stage's own function, extract_features, cold: model build, trace, XLA compile and
     every image, timed by the stage itself (TensorFlow's import excluded), batch size 64 as in params.yaml;
  3. for batch 64 with XLA, batch 64 without XLA (the stage's CPU code path, run on the GPU) and batch 256 with
     XLA: one compiled extractor, warmed up (trace + XLA compile timed on its own), then `end_to_end`: files ->
     decode/resize -> model -> features written, with the stage's own functions (image_batches,
     write_features), and `model_only`: the same batch shapes from a tensor already on the GPU.
Prints a summary and writes everything as JSON to $OUT/gpu_benchmark.json when OUT is set (and to --json).
Keeps to a time budget (--budget-s, default 270 s): a step that would start after it is skipped.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REQUIRED = {  # module: what to install
    "tensorflow": "tensorflow[and-cuda]==2.21.0",
    "keras": "keras==3.15.1",
    "numpy": "numpy",
    "pandas": "pandas",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "tqdm": "tqdm",
    "sklearn": "scikit-learn",
}
STARTED = time.perf_counter()


def elapsed() -> float:
    return time.perf_counter() - STARTED


def log(message: str) -> None:
    print(f"[{elapsed():6.1f} s] {message}", file=sys.stderr, flush=True)


def missing_modules() -> list[str]:
    import importlib.util

    return [package for module, package in REQUIRED.items() if importlib.util.find_spec(module) is None]


def write_report(report: dict, json_path: Path | None) -> None:
    text = json.dumps({k: v for k, v in report.items() if k != "_json"}, indent=2, default=str) + "\n"
    targets = [Path(os.environ["OUT"]) / "gpu_benchmark.json"] if os.environ.get("OUT") else []
    targets += [json_path] if json_path else []
    for path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def nvidia_smi() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                                 "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        return result.stdout.strip() or result.stderr.strip()
    except (OSError, subprocess.SubprocessError) as error:
        return f"nvidia-smi failed: {error}"


# ------------------------------------------------------------------------------------------------ images


def _write_images(job: tuple[str, list[tuple[int, int, int]], int, int]) -> int:
    """One worker's share: (class index, image number, seed) triples -> root/<class>/image_NNNN.jpg."""
    import numpy as np

    from tools.synthetic import class_names, make_image

    root, items, n_classes, size = job
    names = class_names(n_classes)
    for class_index, number, seed in items:
        image = make_image(class_index, n_classes, size, np.random.default_rng(seed))
        image.save(Path(root) / names[class_index] / f"image_{number:04d}.jpg", "JPEG")
    return len(items)


def make_images(root: Path, n_images: int, size: int, workers: int) -> dict:
    """n_images JPEGs in up to 50 class folders (tools.synthetic's look), written by parallel processes."""
    from tools.synthetic import class_names

    n_classes = max(2, min(50, n_images // 20))
    names = class_names(n_classes)
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
    items = [(i % n_classes, i // n_classes + 1, i) for i in range(n_images)]
    jobs = [(str(root), items[w::workers], n_classes, size) for w in range(workers)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        written = sum(pool.map(_write_images, jobs))
    return {"images": written, "classes": n_classes, "size": size}


# ------------------------------------------------------------------------------------------------ timing


def run_step(report: dict, name: str, budget_s: float, function, *args) -> dict | None:
    """Run one timed step, recording its result or its error; the report is rewritten after every step, so a
    run cut short still leaves what it measured."""
    try:
        return _run_step(report, name, budget_s, function, *args)
    finally:
        report["seconds"] = elapsed()
        write_report(report, report.get("_json"))


def _run_step(report: dict, name: str, budget_s: float, function, *args) -> dict | None:
    if elapsed() > budget_s:
        report["skipped"].append(f"{name}: time budget of {budget_s:.0f} s spent")
        log(f"{name}: skipped (time budget)")
        return None
    log(f"{name} ...")
    try:
        result = function(*args)
    except Exception as error:  # noqa: BLE001 - record it, keep going with the other steps
        report["errors"][name] = f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=8)}"
        log(f"{name}: FAILED {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        return None
    report["steps"][name] = result
    log(f"{name}: {json.dumps(result, default=str)}")
    return result


def stage_cold(images: Path, split: Path, out: Path, image_size: int, batch_size: int) -> dict:
    """The features stage's own function, as `python -m stages.features` runs it (after its imports)."""
    from stages.features import extract_features
    from stages.params import FeaturesParams

    config = FeaturesParams(backbone="resnet50", weights=None, image_size=image_size, batch_size=batch_size)
    start = time.perf_counter()
    result = extract_features(images, split, out, config)
    total = time.perf_counter() - start
    return {"batch_size": batch_size, "images": result["images"], "device": result["device"],
            "stage_timer_s": result["seconds"], "stage_img_s": result["images"] / result["seconds"],
            "with_model_build_s": total}


def warm_extractor(image_size: int, batch_size: int, part_sizes: list[int], images_dir: Path, manifests: dict,
                   scratch: Path, xla: bool = True) -> dict:
    """One compiled extractor: compile time, then end to end (files -> features on disk) and model only.
    xla=False: the stage's code as it runs on a CPU (a plain graph, float32 input) but on the GPU, to weigh
    XLA's one-off compile against its speed."""
    import tensorflow as tf

    from benchmarks.throughput import batch_sizes
    from stages.backbones import build_extractor, use_device
    from stages.features import compile_extractor, image_batches, write_features

    start = time.perf_counter()
    device = use_device()
    variant = device if xla else "CPU"  # what the stage's functions go by; ops still run on the GPU
    model = build_extractor("resnet50", None, image_size)
    n_features = model.output_shape[-1]
    extract_batch = compile_extractor(model, variant, batch_size)
    built = time.perf_counter()
    images = tf.random.uniform((batch_size, image_size, image_size, 3), 0, 255, seed=0)
    extract_batch(images).numpy()  # trace + XLA compile
    extract_batch(images[: max(1, batch_size // 3)]).numpy()  # a short batch: padded, must not compile again
    compiled = time.perf_counter()

    sizes = batch_sizes(part_sizes, batch_size)
    t0 = time.perf_counter()
    for n in sizes:  # each batch's features copied back to the host, as write_features does
        extract_batch(images[:n]).numpy()
    model_s = time.perf_counter() - t0

    t0 = time.perf_counter()  # as extract_features does it, the model already compiled
    for part, frame in manifests.items():
        paths = [str(images_dir / p) for p in frame["path"]]
        batches = image_batches(paths, image_size, batch_size)
        write_features(extract_batch, batches, len(paths), n_features, scratch / f"{part}_{batch_size}.npy", part)
    end_to_end_s = time.perf_counter() - t0
    total = sum(sizes)
    return {
        "batch_size": batch_size, "device": device, "xla": xla and device.startswith("GPU"), "images": total,
        "build_s": built - start, "compile_s": compiled - built,
        "model_only_img_s": total / model_s, "end_to_end_img_s": total / end_to_end_s,
        "ratio": (total / end_to_end_s) / (total / model_s),
    }


# ------------------------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=int(os.environ.get("GPU_BENCH_IMAGES", 5000)))
    parser.add_argument("--size", type=int, default=int(os.environ.get("GPU_BENCH_SIZE", 256)),
                        help="side of the generated JPEGs and of the model input (default 256)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--budget-s", type=float, default=float(os.environ.get("GPU_BENCH_BUDGET_S", 270)))
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU (a dry run of the script)")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--json", type=Path, help="also write the JSON report here")
    args = parser.parse_args()

    report: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "settings": vars(args).copy(), "steps": {},
                    "errors": {}, "skipped": [], "machine": {"python": platform.python_version(),
                                                             "cpus": os.cpu_count(), "nvidia_smi": nvidia_smi()}}
    report["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in report["settings"].items()}
    report["_json"] = args.json
    missing = missing_modules()
    if missing:
        report["errors"]["requirements"] = f"missing Python packages: {' '.join(missing)}"
        write_report(report, args.json)
        print(f"gpu_benchmark: missing Python packages: {' '.join(missing)}\n"
              f"install them (offline: from a wheelhouse, see benchmarks/gpu_benchmark.sh) and run again",
              file=sys.stderr)
        return 2

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t0 = time.perf_counter()
    import tensorflow as tf
    import keras  # noqa: F401

    report["machine"].update(tensorflow=tf.__version__, import_tensorflow_s=time.perf_counter() - t0,
                             build=dict(tf.sysconfig.get_build_info()))
    gpus = tf.config.list_physical_devices("GPU")
    report["machine"]["gpus"] = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
                                 for g in gpus]
    log(f"TensorFlow {tf.__version__}, GPUs: {report['machine']['gpus'] or 'none'}; {report['machine']['nvidia_smi']}")
    if not gpus and not args.allow_cpu:
        report["errors"]["gpu"] = "TensorFlow sees no GPU (is it the CUDA build: tensorflow[and-cuda]?)"
        write_report(report, args.json)
        print("gpu_benchmark: TensorFlow sees no GPU; install tensorflow[and-cuda], or pass --allow-cpu",
              file=sys.stderr)
        return 1

    scratch = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="gpu_benchmark_"))
    try:
        import pandas as pd

        from stages.split import list_images, split_images, write_manifests

        images_dir, split_dir = scratch / "images", scratch / "split"
        workers = max(1, min(16, os.cpu_count() or 1))
        run_step(report, "generate_images", args.budget_s, make_images, images_dir, args.images, args.size, workers)
        write_manifests(split_images(list_images(images_dir), 0.2, 0.2, 42), split_dir)
        manifests = {part: pd.read_csv(split_dir / f"{part}.csv", dtype=str, keep_default_na=False)
                     for part in ("train", "val", "test")}
        part_sizes = [len(frame) for frame in manifests.values()]
        report["settings"]["parts"] = dict(zip(manifests, part_sizes))

        run_step(report, "stage_cold_batch64", args.budget_s, stage_cold, images_dir, split_dir,
                 scratch / "features", args.size, 64)
        variants = [(args.batch_sizes[0], True), (args.batch_sizes[0], False)] + \
            [(batch_size, True) for batch_size in args.batch_sizes[1:]]
        for batch_size, xla in variants:
            run_step(report, f"warm_batch{batch_size}{'' if xla else '_noxla'}", args.budget_s, warm_extractor,
                     args.size, batch_size, part_sizes, images_dir, manifests, scratch, xla)
    finally:
        if not args.workdir:
            shutil.rmtree(scratch, ignore_errors=True)
    report["seconds"] = elapsed()
    write_report(report, args.json)

    print(f"\nGPU feature-extraction benchmark: {args.images} JPEGs of {args.size}x{args.size}, "
          "ResNet50 (random init)")
    print(f"machine: {report['machine']['gpus'] or 'no GPU'} | nvidia-smi: {report['machine']['nvidia_smi']} | "
          f"{os.cpu_count()} CPUs | TensorFlow {tf.__version__}")
    cold = report["steps"].get("stage_cold_batch64")
    if cold:
        print(f"features stage, cold (build + XLA compile + all images), batch 64: {cold['stage_img_s']:.0f} img/s "
              f"({cold['stage_timer_s']:.1f} s) on {cold['device']}")
    for name, warm in report["steps"].items():
        if name.startswith("warm_"):
            print(f"batch {warm['batch_size']:4d}, {'XLA   ' if warm['xla'] else 'no XLA'}: end to end "
                  f"{warm['end_to_end_img_s']:8.0f} img/s | model only {warm['model_only_img_s']:8.0f} img/s | "
                  f"ratio {warm['ratio']:.2f} | trace+compile {warm['compile_s']:.1f} s")
    for name, error in report["errors"].items():
        print(f"ERROR in {name}: {error.splitlines()[0]}")
    for line in report["skipped"]:
        print(f"skipped: {line}")
    where = f"; JSON in {os.environ['OUT']}/gpu_benchmark.json" if os.environ.get("OUT") else ""
    print(f"total {report['seconds']:.0f} s{where}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
