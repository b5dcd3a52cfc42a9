"""Stage 1: fetch the archive named by data.url into data/raw/, checksum-verified and resumable.

An interrupted HTTP transfer waits under data/.partial/ (outside the stage's output, which DVC deletes before each
run) and is resumed. The archive reaches data/raw/ only once it is verified (transfer/fetch/downloads.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from transfer.core import cli, params
from transfer.core.files import atomic_output, remove
from transfer.core.redact import redact
from transfer.fetch.downloads import archive_name, receive


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


def main(raw_dir: Path, partial_dir: Path, **options) -> None:
    """Options (transfer/fetch/downloads.py DEFAULTS): timeout, retries, backoff, max_wait, time_limit (seconds),
    max_size (bytes). SIGTERM, like Ctrl-C, keeps what arrived for the next run to resume (transfer/core/cli.py)."""
    data = params.load().data
    remove(Path(raw_dir))  # one archive in data/raw: the one data.url names
    Path(raw_dir).mkdir(parents=True)
    dest = download(data.url, raw_dir, data.md5, partial_dir, **options)
    print(f"downloaded {redact(data.url)} -> {dest}")


if __name__ == "__main__":
    cli.stage(
        main,
        __doc__,
        raw_dir="where the verified archive is written (data/raw)",
        options={
            "--partial-dir": dict(type=Path, default=Path("data/.partial"), help="where interrupted downloads wait"),
            "--timeout": dict(type=float, default=60.0, help="seconds without data before a retry"),
            "--retries": dict(type=int, default=5, help="retries in a row without progress before giving up"),
            "--backoff": dict(type=float, default=2.0, help="seconds before the first retry (then doubling)"),
            "--max-retry-wait": dict(
                dest="max_wait", type=float, default=300.0, help="cap on a server's Retry-After (s)"
            ),
            "--time-limit": dict(type=float, default=1800.0, help="the whole transfer ends within this many seconds"),
            "--max-size": dict(type=int, default=20 * 2**30, help="the most bytes a download may write (20 GiB)"),
        },
    )
