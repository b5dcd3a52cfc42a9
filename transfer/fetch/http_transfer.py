"""One HTTP transfer attempt: the bytes as the server stores them, resumed only when the file is the same one.

Each attempt classifies the answer (an error retried or not), decides whether it continues the partial file or
starts it over (transfer/fetch/resume.py), then streams the body. The body is read raw (never un-gzipped, even when
a .tar.gz comes with `Content-Encoding: gzip`), so the md5 and the resume offset count the stored bytes. A size the
disk cannot hold is refused before a byte is written; a body with no length announced stops at the size limit or
the free space, whichever comes first, and is not kept. Who gets credentials: transfer/fetch/credentials.py.
"""

from __future__ import annotations

import http.client
import shutil
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import NamedTuple

import requests
import urllib3

from transfer.core.errors import StageError
from transfer.core.files import check_room, free_bytes, writes
from transfer.core.progress import progress
from transfer.core.redact import redact
from transfer.fetch.credentials import CREDENTIALS_HINT, encrypted
from transfer.fetch.deadline import Deadline
from transfer.fetch.net_errors import PastDeadline, TransientError, describe, failure
from transfer.fetch.resume import resume_headers, resume_or_restart, start_over
from transfer.unpack import formats

# Read the network in pieces of at most this size, as they arrive, so a cut or a stall loses nothing received.
NET_CHUNK = 1 << 16
# Client errors that retrying cannot fix.
PERMANENT_HTTP_ERRORS = {400, 401, 403, 404, 405, 410, 451}
NETWORK_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, ConnectionError, TimeoutError)
# A body with no length announced stops this short of filling the disk, so the machine stays usable.
KEEP_FREE = 64 << 20


class Served(NamedTuple):
    """What the answer said of the file: its Content-Disposition and final URL (they name it), its Content-Encoding."""

    disposition: str | None
    url: str
    encoding: str | None


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def attempt(
    client: requests.Session, url: str, partial: Path, timeout: float, deadline: Deadline, max_size: int
) -> Served:
    """One GET into `partial`, resuming it when it is the same file, of at most `max_size` bytes. Raises
    TransientError to ask for a retry, and PastDeadline when `deadline` passes at any point of the exchange (`client`
    is watched by it: transfer/fetch/deadline.py)."""
    shown = redact(url)
    try:
        with deadline.enforced():
            served = _attempt(client, url, shown, partial, timeout, deadline, max_size)
    except (requests.RequestException, TransientError) as error:
        if deadline.passed:  # the connection was shut at the deadline: that is what happened
            raise _past(partial) from None
        if isinstance(error, TransientError):
            raise
        raise failure(error, url, shown) from None
    if deadline.passed:  # a head cut short at the deadline can read as a whole, empty answer
        raise _past(partial)
    return served


def _past(partial: Path) -> PastDeadline:
    size = partial.stat().st_size if partial.exists() else 0
    if not size:  # nothing of the file arrived: nothing to resume
        start_over(partial)
    return PastDeadline(f"{size:,} bytes of the file received" if size else "before the server's answer was complete")


def _attempt(
    client: requests.Session, url: str, shown: str, partial: Path, timeout: float, deadline: Deadline, max_size: int
) -> Served:
    have, headers, state = resume_headers(partial, shown)
    with client.get(url, headers=headers, stream=True, timeout=deadline.timeout(timeout)) as response:
        _classify(response, url, shown, partial)
        have, total = resume_or_restart(response, shown, partial, have, state)
        answer = response.headers
        served = Served(answer.get("Content-Disposition"), response.url, answer.get("Content-Encoding"))
        cap = _size_limit(shown, partial, have, total, max_size)
        _stream_body(response, url, partial, have, total, deadline, cap)
    size = partial.stat().st_size
    if total is not None and size < total:
        raise TransientError(f"connection closed after {size:,} of {total:,} bytes")
    if total is None and (problem := formats.check(partial)) and problem.incomplete:
        raise TransientError(
            f"the connection closed with no length announced and the archive's end is missing ({problem.what})"
        )
    return served


def _classify(response, url: str, shown: str, partial: Path) -> None:
    """Raise for an answer that carries no file: StageError when retrying cannot help, else TransientError."""
    status = response.status_code
    if status == 416:  # the partial file is longer than what the server has now
        start_over(partial)
        raise TransientError("server refused to resume (HTTP 416); starting over", at_once=True)
    if status in (401, 403):
        plain = "" if encrypted(url) else "; none is sent over plain http: use the file's https:// URL"
        raise StageError(f"{shown}: HTTP {status} {response.reason}; {CREDENTIALS_HINT}{plain}")
    if status in PERMANENT_HTTP_ERRORS:
        raise StageError(f"{shown}: HTTP {status} {response.reason}; check data.url in params.yaml")
    if status >= 400:
        raise TransientError(f"HTTP {status} {response.reason}", retry_after(response.headers.get("Retry-After")))


def _size_limit(shown: str, partial: Path, have: int, total: int | None, max_size: int) -> tuple[int, str]:
    """The most bytes the body may bring and what sets that bound; a size announced beyond what the disk or the
    size limit can take is refused before a byte is written."""
    folder = partial.parent
    if total is not None:
        disk = shutil.disk_usage(folder).total
        if total > disk:
            start_over(partial)
            raise StageError(
                f"{shown} announces {total:,} bytes (Content-Length), more than the whole disk holding {folder} "
                f"({disk:,} bytes): the server's answer is wrong, or this is not the archive; check data.url in "
                "params.yaml; nothing was kept"
            )
        if total > max_size:
            start_over(partial)
            raise StageError(
                f"{shown} announces {total:,} bytes (Content-Length), over the {max_size:,}-byte limit (--max-size "
                "of the download stage); check data.url in params.yaml, or raise --max-size in the download stage's "
                "cmd in dvc.yaml if the archive is that large; nothing was kept"
            )
        kept = f"the partial download {partial} is kept, and the next run resumes it (delete it to free its space)"
        check_room(folder, total - have, kept if have else "nothing was written")  # not once the disk is full
        return total, ""
    room = have + max(0, (free_bytes(folder) or max_size) - KEEP_FREE)
    if room < max_size:
        return room, f"the free space of the disk holding {folder}, less {KEEP_FREE >> 20} MiB kept free"
    return max_size, "the --max-size limit of the download stage"


def _stream_body(
    response, url: str, partial: Path, have: int, total: int | None, deadline: Deadline, cap: tuple[int, str]
) -> None:
    """Append the body to the partial file (or write it anew when `have` is 0) as it arrives, raw, up to the cap."""
    desc = redact(url).rpartition("/")[2].partition("?")[0] or "download"
    kept = f"the partial download {partial} is kept, and the next run resumes it (delete it to free its space)"
    limit, bound = cap
    # Unbuffered: every byte received is on disk at once, whatever ends the process.
    with (
        writes(partial.parent, total, kept),
        open(partial, "ab" if have else "wb", buffering=0) as out,
        progress(desc=desc, unit="B", total=total, initial=have) as bar,
    ):
        written = have
        try:
            while chunk := response.raw.read1(NET_CHUNK, decode_content=False):
                written += len(chunk)
                if written > limit:  # only a body with no length announced gets here (a longer one is cut)
                    break
                out.write(chunk)
                bar.update(len(chunk))
                if deadline.left() < 0:
                    raise _past(partial)
        except NETWORK_ERRORS as error:
            raise TransientError(describe(error)) from None
    if written > limit:
        start_over(partial)
        raise StageError(
            f"{redact(url)} sent more than {limit:,} bytes with no length announced, past {bound}: an endless "
            "stream, or not the archive; check data.url in params.yaml; nothing was kept"
        )
