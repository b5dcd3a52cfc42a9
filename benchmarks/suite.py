"""The test suite's time against a fresh process's Keras import, measured side by side in one run.

    python -m benchmarks.suite [--out benchmarks/results/suite_cpu.json]

Times `python -c "import keras"` in a fresh process (three times, the median), then the README's test command for
the fast tier (`pytest -m "not e2e"`) and for the whole suite (`pytest`), each a fresh process with the suite's own
settings (`-n auto`: a worker per core, tests/conftest.py), then the whole suite again with one more worker
(`--one-more-worker`, to compare), and then the Keras import again. Writes the seconds and the ratios: the
suite in Keras imports of this machine, the unit that makes the figure comparable between a quiet machine and a
busy one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.features_stage import cpu_name
from synthetic.repos import ROOT, subprocess_env


def seconds(command: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stdout[-3000:], result.stderr[-3000:], file=sys.stderr)
    return time.perf_counter() - start, result.returncode


def keras_import() -> float:
    return statistics.median(seconds([sys.executable, "-c", "import keras"])[0] for _ in range(3))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "suite_cpu.json")
    parser.add_argument("--one-more-worker", action="store_true", help="also the whole suite with -n <cores + 1>")
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()[0]
    before = keras_import()
    fast, fast_status = seconds([sys.executable, "-m", "pytest", "-q", "-m", "not e2e", "-p", "no:cacheprovider"])
    whole, whole_status = seconds([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"])
    one_more = None
    if args.one_more_worker:
        one_more = seconds([sys.executable, "-m", "pytest", "-q", "-n", str(cores + 1), "-p", "no:cacheprovider"])
    after = keras_import()
    unit = (before + after) / 2
    figures = {
        "keras_import_s": round(unit, 2),
        "keras_import_before_after_s": [round(before, 2), round(after, 2)],
        "fast_tier_s": round(fast, 1),
        "fast_tier_in_keras_imports": round(fast / unit, 1),
        "fast_tier_exit_status": fast_status,
        "whole_suite_s": round(whole, 1),
        "whole_suite_in_keras_imports": round(whole / unit, 1),
        "whole_suite_exit_status": whole_status,
        **(
            {"whole_suite_one_more_worker_s": round(one_more[0], 1), "whole_suite_one_more_worker_exit": one_more[1]}
            if one_more
            else {}
        ),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(), "cores_usable": cores, "load_average_1min_before": load},
    }
    args.out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
