"""Refuse files over 500 kB in a commit (the pre-commit hook; pre-commit-hooks' check-added-large-files needs its
repository from GitHub): data and models belong in DVC's cache, not in git.

    python .ci/large_files.py [--max-kb N] FILE...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-kb", type=int, default=500, help="the largest size allowed, in kB (default 500)")
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args(argv)
    large = [(path, path.stat().st_size) for path in args.files if path.is_file()]
    large = [(path, size) for path, size in large if size > args.max_kb * 1000]
    for path, size in large:
        print(f"{path}: {size / 1000:.0f} kB, over {args.max_kb} kB: track it with DVC (dvc add, or a stage's outs)")
    return 1 if large else 0


if __name__ == "__main__":
    sys.exit(main())
