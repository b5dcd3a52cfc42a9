"""Stage 0: data/source, what the download stage depends on, so that DVC sees a local archive change.

For a local path or file:// URL, data/source is a symbolic link to the archive as data.url names it: a relative path
stays relative (each checkout tracks its own file), and a link in that path (a "latest" link, an archive added with
`dvc add` under any cache type) is followed each time DVC hashes data/source, never resolved once. DVC hashes what
the link points to, so an archive replaced with other bytes shows in `dvc status` as a modified output of this
stage, and `dvc repro` reruns it, download and all that follows; the same bytes written again change no hash and
rerun nothing. For an http(s) URL it is a one-line file holding the URL (its password and query string shown as
***), written without going to the network: an http(s) URL listed as a DVC dependency would make every `dvc status`
ask the server. data/source describes this machine's file, so it is not kept in git (.gitignore): a link committed
on one machine dangles on another, and DVC then fails on every command (docs/reproducibility.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from transfer.core import cli, params
from transfer.core.errors import StageError
from transfer.core.files import remove
from transfer.core.redact import redact
from transfer.fetch.downloads import local_source


def write_source(url: str, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    remove(tmp)
    archive = local_source(url)
    if archive is None:
        tmp.write_text(redact(url) + "\n", encoding="utf-8")  # no password or query string (transfer/core/redact.py)
    else:
        if not archive.is_file():
            raise StageError(f"data.url {redact(url)!r}: {archive} is not a file; set data.url to an existing archive")
        # Relative to the link's folder for a relative data.url (normalised, links in it kept), else as written.
        target = archive if archive.is_absolute() else Path(os.path.relpath(os.path.abspath(archive), path.parent))
        tmp.symlink_to(target)
    os.replace(tmp, path)


def main(path: Path) -> None:
    data = params.load().data
    write_source(data.url, path)
    print(f"source: {redact(data.url)} -> {path}")


if __name__ == "__main__":
    cli.stage(
        main,
        __doc__,
        path="where the link or URL file is written (data/source)",
    )
