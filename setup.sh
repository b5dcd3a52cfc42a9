#!/bin/sh
# Create .venv with the pinned environment. Where an NVIDIA driver answers, requirements-gpu.txt (TensorFlow's
# CUDA build); else requirements.txt. `--dev` installs requirements-dev.txt: the same plus the test and lint tools.
set -eu
cd "$(dirname "$0")"
if [ "${1:-}" = "--dev" ]; then
    requirements=requirements-dev.txt
elif nvidia-smi >/dev/null 2>&1; then
    requirements=requirements-gpu.txt
else
    requirements=requirements.txt
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -r "$requirements"
# This checkout itself, editable: the `predict` command, and transfer/ importable from any directory.
.venv/bin/pip install --quiet --no-deps --editable .
echo "installed $requirements into .venv"
