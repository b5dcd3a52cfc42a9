"""Stage 1: fetch the archive named by data.url into data/raw/, checksum-verified and resumable.

An interrupted HTTP transfer waits under data/.partial/ (outside the stage's output, which DVC deletes before each
run) and is resumed. The archive reaches data/raw/ only once it is verified (transfer/downloads.py).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from transfer import params
from transfer.cli import run
from transfer.downloads import archive_name, receive
from transfer.files import atomic_output, remove


def download(url: str, raw_dir: Path, md5: str | None, partial_dir: Path, **options) -> Path:
    """Fetch `url` into raw_dir under its own name: the URL's file name, else the server's, else `archive`."""
    partial, served_name = receive(url, partial_dir, md5, **options)
    name = archive_name(url)
    if name is None or "." not in name:  # ".../files/123/download": the server's name says more
        name = served_name or name or "archive"
    dest = Path(raw_dir) / name
    with atomic_output(dest) as tmp:
        shutil.move(partial, tmp)
    return dest


def main(raw_dir: Path, partial_dir: Path, timeout: float, retries: int) -> None:
    data = params.load().data
    remove(Path(raw_dir))  # one archive in data/raw: the one data.url names
    Path(raw_dir).mkdir(parents=True)
    dest = download(data.url, raw_dir, data.md5, partial_dir, timeout=timeout, retries=retries)
    print(f"downloaded {data.url} -> {dest}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw_dir", type=Path, help="where the verified archive is written (data/raw)")
    parser.add_argument(
        "--partial-dir", type=Path, default=Path("data/.partial"), help="where interrupted downloads wait"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a retry")
    parser.add_argument("--retries", type=int, default=5, help="retries after a transient failure")
    args = parser.parse_args()
    run(lambda: main(args.raw_dir, args.partial_dir, args.timeout, args.retries))
