"""One HTTP transfer attempt: the bytes as the server stores them, resumed only when the file is the same one.

The body is read raw (never un-gzipped, even when a .tar.gz comes with `Content-Encoding: gzip`), so the md5 and
the resume offset count the stored bytes. A resume sends `If-Range` with the ETag (else the Last-Modified date) of
the first answer, kept beside the partial file; a 206 is also checked against that answer's length and
validators, and anything else starts over. Who gets credentials: transfer/fetch/credentials.py.
"""

from __future__ import annotations

import http.client
import json
import re
import sys
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import requests
import urllib3

from transfer.core.errors import StageError
from transfer.core.files import check_room, disk_space, remove
from transfer.core.progress import progress
from transfer.core.redact import redact
from transfer.fetch.credentials import CREDENTIALS_HINT, encrypted
from transfer.fetch.deadline import Deadline
from transfer.fetch.net_errors import PastDeadline, TransientError, describe, failure
from transfer.unpack import formats

# Read the network in pieces of at most this size, as they arrive, so a cut or a stall loses nothing received.
NET_CHUNK = 1 << 16
# Client errors that retrying cannot fix.
PERMANENT_HTTP_ERRORS = {400, 401, 403, 404, 405, 410, 451}
NETWORK_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, ConnectionError, TimeoutError)


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


def state_path(partial: Path) -> Path:
    """Where the first answer's validators wait beside the partial file."""
    return partial.with_name(partial.name + ".json")


def _read_state(partial: Path) -> dict:
    try:
        return json.loads(state_path(partial).read_text())
    except (OSError, ValueError):
        return {}


def _validator(state: dict) -> str | None:
    """What If-Range may carry: a strong ETag, else the Last-Modified date (weak ETags are not allowed there)."""
    etag = state.get("etag")
    return etag if etag and not etag.startswith("W/") else state.get("last_modified")


def _changed(response, state: dict, have: int) -> str | None:
    """Why a 206 answer is not the rest of the file partly received, or None when it is."""
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", "").strip())
    if not match or int(match.group(1)) != have:
        return f"it sent the range {response.headers.get('Content-Range')!r}, not bytes {have}-"
    if state.get("length") and match.group(2) != "*" and int(match.group(2)) != state["length"]:
        return f"its length is now {int(match.group(2)):,} bytes, was {state['length']:,}"
    for header, key in (("ETag", "etag"), ("Last-Modified", "last_modified")):
        if response.headers.get(header) and state.get(key) and response.headers[header] != state[key]:
            return f"its {header} is now {response.headers[header]}, was {state[key]}"
    return None


def _start_over(partial: Path) -> None:
    remove(partial)
    remove(state_path(partial))


def _resume_headers(partial: Path, shown: str) -> tuple[int, dict, dict]:
    have = partial.stat().st_size if partial.exists() else 0
    state = _read_state(partial) if have else {}
    if not have:
        return 0, {}, {}
    validator = _validator(state)
    if not validator and not state.get("length"):
        print(
            f"{shown}: cannot tell whether the partial file is of the same file (no ETag, date or length); "
            "starting over",
            file=sys.stderr,
        )
        _start_over(partial)
        return 0, {}, {}
    headers = {"Range": f"bytes={have}-"} | ({"If-Range": validator} if validator else {})
    return have, headers, state


def attempt(
    client: requests.Session, url: str, partial: Path, timeout: float, deadline: Deadline
) -> tuple[str | None, str]:
    """One GET into `partial`, resuming it when it is the same file; return the server's Content-Disposition and
    the URL it redirected to (they name the file). Raises TransientError to ask for a retry, and PastDeadline when
    `deadline` passes at any point of the exchange (`client` is watched by it: transfer/fetch/deadline.py)."""
    shown = redact(url)
    try:
        with deadline.enforced():
            served = _attempt(client, url, shown, partial, timeout, deadline)
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
        _start_over(partial)
    return PastDeadline(f"{size:,} bytes of the file received" if size else "before the server's answer was complete")


def _attempt(
    client: requests.Session, url: str, shown: str, partial: Path, timeout: float, deadline: Deadline
) -> tuple[str | None, str]:
    have, headers, state = _resume_headers(partial, shown)
    with client.get(url, headers=headers, stream=True, timeout=deadline.timeout(timeout)) as response:
        _classify(response, url, shown, partial)
        have, total = _resume_or_restart(response, shown, partial, have, state)
        served = response.headers.get("Content-Disposition"), response.url
        _stream_body(response, url, partial, have, total, deadline)
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
        _start_over(partial)
        raise TransientError("server refused to resume (HTTP 416); starting over", at_once=True)
    if status in (401, 403):
        plain = "" if encrypted(url) else "; none is sent over plain http: use the file's https:// URL"
        raise StageError(f"{shown}: HTTP {status} {response.reason}; {CREDENTIALS_HINT}{plain}")
    if status in PERMANENT_HTTP_ERRORS:
        raise StageError(f"{shown}: HTTP {status} {response.reason}; check data.url in params.yaml")
    if status >= 400:
        raise TransientError(f"HTTP {status} {response.reason}", retry_after(response.headers.get("Retry-After")))


def _resume_or_restart(response, shown: str, partial: Path, have: int, state: dict) -> tuple[int, int | None]:
    """Whether the answer continues the partial file (the bytes kept) or starts it over (0), and the file's whole
    length when announced. A new file's validators are recorded beside the partial file for the next resume."""
    if have and response.status_code == 206 and (why := _changed(response, state, have)):
        print(
            f"{shown}: the file changed on the server since the transfer was cut ({why}); starting over",
            file=sys.stderr,
        )
        _start_over(partial)
        raise TransientError("the file changed on the server", at_once=True)
    if have and response.status_code != 206:
        changed = any(
            response.headers.get(h) and state.get(k) and response.headers[h] != state[k]
            for h, k in (("ETag", "etag"), ("Last-Modified", "last_modified"))
        )
        why = "the file changed on the server" if changed else "the server does not support resuming"
        print(f"{shown}: {why}; starting over", file=sys.stderr)
        have = 0
    length = response.headers.get("Content-Length", "")
    total = have + int(length) if length.isdigit() else None
    if not have:
        state = {"etag": response.headers.get("ETag"), "last_modified": response.headers.get("Last-Modified")}
        state["length"] = total
        state_path(partial).write_text(json.dumps(state))
    return have, total


def _stream_body(response, url: str, partial: Path, have: int, total: int | None, deadline: Deadline) -> None:
    """Append the body to the partial file (or write it anew when `have` is 0) as it arrives, raw."""
    desc = redact(url).rpartition("/")[2].partition("?")[0] or "download"
    kept = f"the partial download {partial} is kept, and the next run resumes it (delete it to free its space)"
    if total is not None:  # refused before a byte is written, not once the disk is full
        check_room(partial.parent, total - have, kept if have else "nothing was written")
    # Unbuffered: every byte received is on disk at once, whatever ends the process.
    with (
        disk_space(partial.parent, total, kept),
        open(partial, "ab" if have else "wb", buffering=0) as out,
        progress(desc=desc, unit="B", total=total, initial=have) as bar,
    ):
        try:
            while chunk := response.raw.read1(NET_CHUNK, decode_content=False):
                out.write(chunk)
                bar.update(len(chunk))
                if deadline.left() < 0:
                    raise _past(partial)
        except NETWORK_ERRORS as error:
            raise TransientError(describe(error)) from None
