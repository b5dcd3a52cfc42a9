#!/usr/bin/env bash
# The GPU feature-extraction benchmark (benchmarks/gpu_benchmark.py); run from anywhere, e.g. on a rented GPU box:
#
#   benchmarks/gpu_benchmark.sh                        # 5,000 JPEGs of 256x256
#                                                      # (JSON to $OUT/gpu_benchmark.json when OUT is set)
#   GPU_BENCH_IMAGES=500 benchmarks/gpu_benchmark.sh   # fewer images; any gpu_benchmark.py option passes through
#
# Python: $PYTHON if set, else .venv/bin/python if it runs here, else python3. It needs TensorFlow 2.21 with CUDA
# and the packages in requirements.txt. On a machine without internet, bring a wheelhouse made on one with it
# (same Python version and platform as the GPU box, e.g. 3.12 / manylinux x86_64):
#   pip download -d wheelhouse --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -r requirements.txt "tensorflow[and-cuda]==2.21.0"
# and set WHEELHOUSE=/path/to/wheelhouse: this script then installs from it, offline, into /tmp/gpu-bench-venv
# (a minute or two, not counted in the benchmark's own time budget) before running.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${WHEELHOUSE:-}" ]]; then
    python3 -m venv /tmp/gpu-bench-venv
    /tmp/gpu-bench-venv/bin/pip install -q --no-index --find-links "$WHEELHOUSE" \
        -r requirements.txt "tensorflow[and-cuda]==2.21.0"
    PYTHON=/tmp/gpu-bench-venv/bin/python
fi
if [[ -z "${PYTHON:-}" ]]; then
    if .venv/bin/python -c "" 2>/dev/null; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec timeout "${GPU_BENCH_TIMEOUT_S:-290}" "$PYTHON" -m benchmarks.gpu_benchmark "$@"
