"""Feature extraction on a GPU with the JAX and PyTorch backends: image files -> saved features, against the model.

Made for a machine with one NVIDIA GPU, JAX and/or PyTorch with CUDA, no TensorFlow and no network: only Keras
and its small pure dependencies travel as wheels (see benchmarks/README.md). From the repository root:

    python3 -m benchmarks.gpu_benchmark                       # 5,000 JPEGs of 256x256, batch 64 and 256
    python3 -m benchmarks.gpu_benchmark --images 200 --size 64 --allow-cpu   # a dry run without a GPU

Steps: generate N JPEGs (synthetic.datasets's pictures, parallel processes) and split them (the split stage's code);
then, per backend, in a process of its own (Keras picks its backend at import):
  stage_cold     the features stage's own function, extract_features, as `dvc repro` runs it: model build,
                 compile, every image decoded, run and written (the stage's own timer);
  per batch size one compiled extractor, warmed up (compile timed on its own), then
                 end_to_end: files -> decode + resize -> model -> features on disk, with the stage's own
                 functions (ImageDecoder, write_features); model_only: the same batches, already decoded,
                 from host memory through the same function; decode_only: the decoder alone.
Prints a summary and writes JSON to $OUT/gpu_benchmark.json when OUT is set (and to --json). Each step is
recorded as it ends, so a run cut short keeps what it measured.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BACKENDS = ("jax", "torch")
PARTS = ("train", "val", "test")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def nvidia_smi() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    result = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.stdout.strip() or result.stderr.strip()


def _write_images(job: tuple[str, list[tuple[int, int, int]], int, int]) -> int:
    """One worker's share: (class index, image number, seed) -> root/<class>/image_NNNN.jpg."""
    import numpy as np

    from synthetic.datasets import class_names, make_image

    root, items, n_classes, size = job
    names = class_names(n_classes)
    for class_index, number, seed in items:
        image = make_image(class_index, n_classes, size, np.random.default_rng(seed))
        image.save(Path(root) / names[class_index] / f"image_{number:04d}.jpg", "JPEG", quality=90)
    return len(items)


def make_dataset(scratch: Path, n_images: int, size: int) -> dict:
    """n_images JPEGs in up to 50 class folders, written by parallel processes, and their split."""
    from stages.split import list_images, split_images, write_manifests
    from synthetic.datasets import class_names

    images = scratch / "images"
    n_classes = max(2, min(50, n_images // 20))
    for name in class_names(n_classes):
        (images / name).mkdir(parents=True, exist_ok=True)
    items = [(i % n_classes, i // n_classes + 1, i) for i in range(n_images)]
    workers = max(1, min(16, os.cpu_count() or 1))
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        written = sum(
            pool.map(_write_images, [(str(images), items[w::workers], n_classes, size) for w in range(workers)])
        )
    write_manifests(split_images(list_images(images), 0.2, 0.2, 42), scratch / "split")
    return {"images": written, "classes": n_classes, "size": size, "seconds": time.perf_counter() - start}


# ------------------------------------------------------------------------------------------ one backend


def measure_backend(name: str, scratch: Path, size: int, batch_sizes: list[int], result_path: Path) -> None:
    """Runs in a process of its own; writes its figures to result_path after every step."""
    import numpy as np

    from stages.features import extract_features
    from transfer.core import devices
    from transfer.core.manifests import read_manifests
    from transfer.core.params import FeaturesParams
    from transfer.features.cache import write_features
    from transfer.features.compiled_backbone import Extractor
    from transfer.features.decode_pool import ImageDecoder

    figures: dict = {"backend": name, "steps": {}}

    def record(step: str, values: dict) -> None:
        figures["steps"][step] = values
        result_path.write_text(json.dumps(figures, indent=2))
        log(f"{name} {step}: {json.dumps(values)}")

    start = time.perf_counter()
    keras = devices.use(name)
    figures["keras"] = keras.__version__
    figures["import_s"] = time.perf_counter() - start

    config = FeaturesParams(backbone="resnet50", backend=name, weights=None, image_size=size, batch_size=64)
    start = time.perf_counter()
    stage = extract_features(scratch / "images", scratch / "split", scratch / f"features-{name}", config)
    record(
        "stage_cold_batch64",
        {
            "device": stage["device"],
            "images": stage["images"],
            "stage_timer_s": stage["seconds"],
            "stage_img_s": stage["images"] / stage["seconds"],
            "with_model_build_s": time.perf_counter() - start,
        },
    )

    from transfer.features.backbones import build_extractor

    manifests = read_manifests(scratch / "split")
    paths = [str(scratch / "images" / p) for frame in manifests.values() for p in frame["path"]]
    n_images = len(paths)
    model = build_extractor("resnet50", None, size)
    on_gpu = stage["device"].startswith("GPU")
    decoded = np.random.default_rng(0).integers(0, 256, (max(batch_sizes), size, size, 3), dtype=np.uint8)
    for batch_size in batch_sizes:
        extractor = Extractor(model, name, batch_size, on_gpu)
        t0 = time.perf_counter()
        extractor(decoded[:batch_size])
        extractor(decoded[: max(1, batch_size // 3)])  # a short last batch: padded, no second compile
        compile_s = time.perf_counter() - t0

        sizes = [min(batch_size, n_images - i) for i in range(0, n_images, batch_size)]
        t0 = time.perf_counter()  # as write_features runs the model: one batch in flight, the last one fetched
        in_flight = None
        for n in sizes:
            launched = extractor.start(decoded[:n])
            if in_flight is not None:
                extractor.finish(in_flight)
            in_flight = launched
        extractor.finish(in_flight)
        model_s = time.perf_counter() - t0

        with ImageDecoder(size, batch_size) as decoder:  # worker start-up is not counted, as in a long run
            for _ in decoder.batches(paths[: batch_size * decoder.workers]):
                pass
            t0 = time.perf_counter()
            for _ in decoder.batches(paths):
                pass
            decode_s = time.perf_counter() - t0

            t0 = time.perf_counter()
            out = scratch / f"e2e-{name}-{batch_size}.npy"
            write_features(extractor, decoder.batches(paths), n_images, model.output_shape[-1], out, "e2e")
            end_to_end_s = time.perf_counter() - t0
        record(
            f"batch{batch_size}",
            {
                "batch_size": batch_size,
                "images": n_images,
                "compile_s": compile_s,
                "model_only_img_s": n_images / model_s,
                "decode_only_img_s": n_images / decode_s,
                "end_to_end_img_s": n_images / end_to_end_s,
                "ratio_end_to_end_to_model": model_s / end_to_end_s,
            },
        )


# ------------------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--size", type=int, default=256, help="side of the JPEGs and of the model input")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU (a dry run of the script)")
    parser.add_argument("--json", type=Path, help="also write the JSON report here")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: measure one backend in this process
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        measure_backend(args.child, args.scratch, args.size, args.batch_sizes, args.scratch / f"{args.child}.json")
        return 0

    report: dict = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "nvidia_smi": nvidia_smi()},
        "settings": {"images": args.images, "size": args.size, "batch_sizes": args.batch_sizes},
        "backends": {},
        "errors": {},
    }
    targets = [Path(os.environ["OUT"]) / "gpu_benchmark.json"] if os.environ.get("OUT") else []
    targets += [args.json] if args.json else []

    def save() -> None:
        for path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report, indent=2) + "\n")

    log(f"GPU: {report['machine']['nvidia_smi'] or 'none'}; {os.cpu_count()} CPUs")
    if not report["machine"]["nvidia_smi"] and not args.allow_cpu:
        print("gpu_benchmark: no NVIDIA GPU (nvidia-smi not found); pass --allow-cpu for a dry run", file=sys.stderr)
        return 1
    scratch = Path(tempfile.mkdtemp(prefix="gpu_benchmark_"))
    try:
        report["dataset"] = make_dataset(scratch, args.images, args.size)
        log(f"dataset: {report['dataset']}")
        save()
        for name in args.backends:
            command = [
                sys.executable,
                "-m",
                "benchmarks.gpu_benchmark",
                "--child",
                name,
                "--scratch",
                str(scratch),
                "--size",
                str(args.size),
                "--batch-sizes",
                *map(str, args.batch_sizes),
            ]
            child = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            figures = scratch / f"{name}.json"
            report["backends"][name] = json.loads(figures.read_text()) if figures.exists() else {}
            if child.returncode != 0:
                report["errors"][name] = child.stderr[-3000:]
                log(f"{name} failed:\n{child.stderr[-3000:]}")
            save()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(
        f"\nResNet50 features, {args.images} JPEGs of {args.size}x{args.size}; GPU: {report['machine']['nvidia_smi']}"
    )
    for name, figures in report["backends"].items():
        steps = figures.get("steps", {})
        cold = steps.get("stage_cold_batch64")
        if cold:
            print(
                f"{name:6s} stage as dvc runs it (compile included), batch 64: {cold['stage_img_s']:7.0f} img/s "
                f"on {cold['device']}"
            )
        for step, values in steps.items():
            if step.startswith("batch"):
                print(
                    f"{name:6s} batch {values['batch_size']:4d}: end to end {values['end_to_end_img_s']:7.0f} img/s | "
                    f"model only {values['model_only_img_s']:7.0f} | ratio {values['ratio_end_to_end_to_model']:.2f} | "
                    f"decode only {values['decode_only_img_s']:7.0f} | compile {values['compile_s']:.1f} s"
                )
    for name, error in report["errors"].items():
        print(f"ERROR {name}: {error.strip().splitlines()[-1] if error.strip() else '?'}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
