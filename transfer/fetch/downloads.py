"""Fetching an archive from an http(s) URL, a file:// URL or a path: checksum-verified, whole and resumable.

An interrupted HTTP transfer is kept under data/.partial/ (outside the stage's output, which DVC deletes before
each run) and resumed only if the file on the server is the same (transfer/fetch/http_transfer.py). The file reaches
data/raw/ only once its md5 matches data.md5 and it is a whole zip or tar archive (transfer/unpack/formats.py): an
HTML page, a 7-Zip or RAR archive, a single compressed file or an archive whose end is missing never sticks, even
with data.md5: null, so the next run fetches again. The file is named after the URL's path, or after the
server's Content-Disposition when that path names no file. No message shows a URL's password or query string.

Retries: a failure that can pass (dropped connection, stall, 5xx, 429) is retried after `backoff` seconds,
doubling, or after the server's Retry-After (capped at `max_wait`); a retry that follows progress resumes at once
after `backoff`, and `retries` counts failures in a row without progress. `time_limit` is a deadline over the whole
exchange (transfer/fetch/deadline.py: a server sending a byte a second never trips the read timeout), and no retry
starts that would begin past it; the final error says how long it tried. `max_size` bounds what is written: a
larger announced length is refused before a byte is written, and a body with no length stops there.
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from email.message import Message
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from transfer.core.errors import StageError
from transfer.core.files import check_room, file_md5, remove, writes
from transfer.core.progress import progress
from transfer.core.redact import redact
from transfer.fetch import credentials, http_transfer
from transfer.fetch.deadline import Deadline, watch
from transfer.fetch.net_errors import PastDeadline, TransientError
from transfer.fetch.resume import state_path
from transfer.unpack import formats

CHUNK = 1 << 20
# A server may name the file longer than the 255 bytes Linux takes; room is left for the temporary's `.NAME.tmp`.
MAX_NAME_BYTES = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# max_size: as the extract stage's unpack limit (transfer/unpack/archives.py), far above Caltech-101's 131 MB.
MAX_DOWNLOAD_BYTES = 20 * 2**30
DEFAULTS = dict(timeout=60.0, retries=5, backoff=2.0, max_wait=300.0, time_limit=1800.0, max_size=MAX_DOWNLOAD_BYTES)
# The schedule of waits goes through here, so tests can check it without waiting.
sleep = time.sleep


def archive_name(url: str) -> str | None:
    """The file name the archive is saved under: the last path segment of the URL or path; None when the
    URL's path names no file (then the server's Content-Disposition names it)."""
    parsed = urlparse(url)
    path = parsed.path if parsed.scheme in ("http", "https", "file") else url
    return None if path.endswith("/") else _clean_name(unquote(path).rpartition("/")[2])


def _clean_name(name: str | None) -> str | None:
    """A bare file name (no folders, nothing hidden, no control character, at most MAX_NAME_BYTES: a longer one is
    shortened, keeping its suffixes), or None."""
    # A NUL cannot be in a path (the open fails) and a line break would split the log line naming the file.
    name = _CONTROL.sub("_", name or "")
    name = PurePosixPath(name.replace("\\", "/")).name.strip()
    if not name.strip("_") or name.startswith("."):
        return None
    if len(name.encode()) > MAX_NAME_BYTES:
        suffix = "".join(PurePosixPath(name).suffixes[-2:])
        suffix = suffix if len(suffix.encode()) <= 16 else ""
        room = MAX_NAME_BYTES - len(suffix.encode())
        name = name.encode()[:room].decode("utf-8", "ignore").removesuffix(suffix) + suffix
    return name


def disposition_name(header: str | None) -> str | None:
    """The file name in a Content-Disposition header (filename*=UTF-8''... or filename="...")."""
    if not header:
        return None
    message = Message()
    message["content-disposition"] = header
    return _clean_name(message.get_filename())


def local_source(url: str) -> Path | None:
    """The local file behind a file:// URL or a plain path; None for http(s)."""
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)).expanduser()
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter is a Windows drive
        raise StageError(
            f"data.url {redact(url)!r}: unsupported scheme {parsed.scheme!r} (use http(s)://, file:// or a path)"
        )
    return Path(url).expanduser()


def _copy_local(source: Path, partial: Path) -> None:
    if not source.is_file():
        raise StageError(f"data.url points to {source}, which is not a file; fix data.url in params.yaml")
    size = source.stat().st_size
    check_room(partial.parent, size, "nothing was written")
    with (
        writes(partial.parent, size),
        open(source, "rb") as src,
        open(partial, "wb") as dst,
        progress(desc=source.name, unit="B", total=size) as bar,  # made once the files are open: no bar left behind
    ):
        while chunk := src.read(CHUNK):
            dst.write(chunk)
            bar.update(len(chunk))


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.2g}"


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _download_http(url: str, partial: Path, options: dict) -> tuple[str | None, str | None]:
    """Fetch url into partial, retrying; the name the server gives the file, and its Content-Encoding."""
    shown, started = redact(url), time.monotonic()
    attempts = failures = 0
    waited = 0.0
    deadline = Deadline(started + options["time_limit"])
    with credentials.session(url) as client:
        watch(client, deadline)
        while True:
            before = _size(partial)
            try:
                served = http_transfer.attempt(
                    client, url, partial, options["timeout"], deadline, int(options["max_size"])
                )
                return disposition_name(served.disposition) or archive_name(served.url), served.encoding
            except PastDeadline as error:
                kept = (
                    f"the partial file {partial} is kept and the next run resumes it"
                    if _size(partial)
                    else ("nothing was kept")
                )
                raise StageError(
                    f"could not download {shown}: the time limit of {_seconds(options['time_limit'])} s "
                    f"(--time-limit) passed while the transfer was under way ({error}); {kept}"
                ) from None
            except TransientError as error:
                attempts += 1
                failures = 1 if _size(partial) > before else failures + 1
                # Waits count even when a test replaces sleep(); in a real run the clock includes them.
                spent = max(time.monotonic() - started, waited)
                wait, note = options["backoff"] * 2 ** (failures - 1), ""
                if error.at_once:
                    wait = 0.0
                elif error.retry_after is not None:
                    wait = min(error.retry_after, options["max_wait"])
                    note = f"; the server asks to wait {_seconds(error.retry_after)} s"
                kept = f"; the partial file {partial} is kept and the next run resumes it" if partial.exists() else ""
                tried = f"{attempts} attempt{'s' * (attempts > 1)} in {_seconds(spent)} s"
                limit = f"the time limit of {_seconds(options['time_limit'])} s (--time-limit)"
                if failures > options["retries"]:
                    raise StageError(
                        f"could not download {shown} after {attempts} attempts: {error}{note} (gave up after "
                        f"{tried}; {limit}){kept}"
                    ) from None
                if spent + wait > options["time_limit"]:
                    raise StageError(
                        f"could not download {shown}: {error}{note}; gave up after {tried}, as waiting "
                        f"{_seconds(wait)} s more would pass {limit}{kept}"
                    ) from None
                capped = " (the --max-retry-wait cap)" if error.retry_after and wait < error.retry_after else ""
                print(
                    f"{shown}: {error}{note}; retrying in {_seconds(wait)} s{capped} ({failures}/{options['retries']})",
                    file=sys.stderr,
                )
                sleep(wait)
                waited = spent + wait


def _refusal(
    url: str, source: Path | None, problem: formats.Problem, had_md5: bool, encoding: str | None = None
) -> StageError:
    """The message for a file that may not enter data/raw, worded for a local file or a server's answer."""
    if source is not None:
        if problem.incomplete:
            return StageError(f"{source} is truncated or corrupt ({problem.what}); {problem.advice}")
        return StageError(
            f"{source} is not a zip or tar archive: it is {problem.what}. {problem.advice[0].upper()}"
            f"{problem.advice[1:]}, then set data.url in params.yaml to the new file"
        )
    shown = redact(url)
    if problem.incomplete:  # the whole body arrived (a short one is retried): the server's copy is broken
        what = f"{problem.what}, though the whole body arrived (the server's copy is broken)"
    else:
        what = f"{problem.what}, not a zip or tar archive"
    pinned = " (and its md5 matches data.md5: that file itself is the wrong one)" if had_md5 else ""
    encoded = (
        f". The server sent it with Content-Encoding: {encoding}, compressed on the way though this stage asks for "
        "the file as stored (Accept-Encoding: identity): ask its owner to serve the file as stored, or download it "
        f"by hand, decompress it (gunzip for gzip) and set data.url to that file"
        if encoding and encoding.strip().lower() != "identity"
        else ""
    )
    return StageError(
        f"{shown} sent {what}{pinned}; nothing was kept, so the next `dvc repro` downloads again. "
        f"Check data.url in params.yaml (it must lead straight to the archive file){encoded}"
    )


def receive(url: str, partial_dir: Path, md5: str | None, **options) -> tuple[Path, str | None]:
    """Download or copy `url` into partial_dir and check it: its md5 when given, and that it is a whole archive.
    Return the checked file and the name the server gave it (None for a local file). Options: DEFAULTS."""
    options = {**DEFAULTS, **options}
    partial_dir = Path(partial_dir)
    partial_dir.mkdir(parents=True, exist_ok=True)
    # One partial file per URL, so changing data.url never resumes the wrong file.
    partial = partial_dir / f"{hashlib.md5(url.encode()).hexdigest()[:12]}.part"
    source = local_source(url)
    served_name = encoding = None
    if source is not None:
        try:
            _copy_local(source, partial)
        except BaseException:  # a local copy is not resumed: never leave half of one
            remove(partial)
            raise
    else:
        served_name, encoding = _download_http(url, partial, options)
    remove(state_path(partial))  # the transfer is over: what follows keeps or deletes the file

    actual = file_md5(partial)
    if md5 is not None and actual != md5:
        remove(partial)
        raise StageError(
            f"checksum mismatch for {redact(url)}: expected md5 {md5}, got {actual}. The file was deleted; "
            "check data.url and data.md5 in params.yaml"
        )
    if problem := formats.check(partial):
        remove(partial)
        raise _refusal(url, source, problem, md5 is not None, encoding)
    if md5 is None:
        print(f"warning: data.md5 is null, so {redact(url)} is not verified (its md5 is {actual})", file=sys.stderr)
    return partial, served_name
