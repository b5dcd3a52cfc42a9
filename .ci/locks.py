"""The lock files, compiled by uv from pyproject.toml's dependencies (and its extras dev and gpu): every package
pinned for Python 3.11 on Linux x86-64, the pipeline's pins the same in all three.

    python .ci/locks.py           # recompile after editing pyproject.toml (make lock)
    python .ci/locks.py --check   # are they current? exit 1 naming each stale file (make lock-check, .ci/run)

uv keeps every pin already in a lock file that pyproject.toml still allows, so a recompile changes only what an
edit requires; --check compiles copies in a temporary folder and compares them byte for byte. Needs the package
index (uv resolves there).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from uv import find_uv_bin

ROOT = Path(__file__).resolve().parents[1]
PLATFORM = ["--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28"]
# Each lock and what it adds to pyproject.toml's dependencies; the dev and GPU files are constrained to the
# pipeline's pins, so the tests and the GPU run the very versions requirements.txt pins.
LOCKS = {
    "requirements.txt": [],
    "requirements-dev.txt": ["--extra", "dev", "-c", "requirements.txt"],
    "requirements-gpu.txt": ["--extra", "gpu", "-c", "requirements.txt"],
}


def compile_locks(folder: Path) -> None:
    """Compile each lock in `folder` (holding pyproject.toml), in order: the later ones read requirements.txt."""
    for name, options in LOCKS.items():
        command = [find_uv_bin(), "pip", "compile", "--quiet", "pyproject.toml", *options, "-o", name, *PLATFORM]
        subprocess.run(command, cwd=folder, check=True)


def stale_locks() -> list[str]:
    """The lock files that a compile from pyproject.toml would change."""
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        for name in ("pyproject.toml", *LOCKS):
            if (ROOT / name).is_file():  # the current pins: uv keeps those pyproject.toml allows
                shutil.copy2(ROOT / name, folder / name)
        compile_locks(folder)
        current = {name: (ROOT / name).read_bytes() if (ROOT / name).is_file() else None for name in LOCKS}
        return [name for name in LOCKS if current[name] != (folder / name).read_bytes()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with a fresh compile instead of writing")
    if not parser.parse_args(argv).check:
        compile_locks(ROOT)
        return 0
    stale = stale_locks()
    for name in stale:
        print(f"{name} is not what pyproject.toml compiles to: run `make lock` and commit it", file=sys.stderr)
    if not stale:
        print(f"{', '.join(LOCKS)}: current with pyproject.toml")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
