"""Peak memory of the features stage's model: what transfer/features/memory.py's estimate is fitted to.

Each configuration runs in a fresh process: build the backbone (random init), compile it as the stage does
(transfer/features/compiled_backbone.py), run two batches of the given size, and report the peak resident memory
(VmHWM) before and after the batches. Prints one JSON line per configuration; `--out` also writes them, as one JSON
document, to a file.

    python -m benchmarks.memory --backbones resnet50 --sizes 128 256 --batches 4 16
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path


def _peak_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(backend: str, backbone: str, size: int, batch: int) -> dict:
    """In this process: peak RSS after building the model, and after running two batches through it."""
    import numpy as np

    from transfer.core import devices

    devices.use(backend)
    from transfer.features.backbones import build_extractor
    from transfer.features.compiled_backbone import Extractor

    model = build_extractor(backbone, None, size)
    extractor = Extractor(model, backend, batch, on_gpu=False)
    built = _peak_bytes()
    images = np.zeros((batch, size, size, 3), np.uint8)
    for _ in range(2):
        extractor(images)
    peak = _peak_bytes()
    return dict(backend=backend, backbone=backbone, size=size, batch=batch, built=built, peak=peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow"])
    parser.add_argument("--backbones", nargs="+", default=["resnet50"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--batches", nargs="+", type=int, default=[4, 16])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", nargs=4, metavar=("BACKEND", "BACKBONE", "SIZE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        backend, backbone, size, batch = args.one
        print(json.dumps(measure(backend, backbone, int(size), int(batch))))
        return
    rows = []
    for backend in args.backends:
        for backbone in args.backbones:
            for size in args.sizes:
                for batch in args.batches:
                    command = [sys.executable, "-m", "benchmarks.memory", "--one", backend, backbone, str(size)]
                    result = subprocess.run([*command, str(batch)], capture_output=True, text=True)
                    if result.returncode != 0:
                        print(result.stderr[-2000:], file=sys.stderr)
                        continue
                    row = json.loads(result.stdout.strip().splitlines()[-1])
                    row["activations_per_pixel"] = (row["peak"] - row["built"]) / (batch * size * size)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    if args.out:  # one JSON document, as every file under benchmarks/results/
        args.out.write_text(json.dumps({"machine": platform.platform(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
