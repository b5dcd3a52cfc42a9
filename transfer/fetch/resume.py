"""Resuming a cut transfer only when the file on the server is the same one.

The first answer's ETag, Last-Modified date and length wait beside the partial file (`<hash>.part.json`). A resume
sends `Range` and `If-Range` (the strong ETag, else the date); a 206 must continue exactly there with the same length
and validators, and anything else starts over, so a file changed on the server never ends mixed.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from transfer.core.files import remove
from transfer.fetch.net_errors import TransientError


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


def start_over(partial: Path) -> None:
    remove(partial)
    remove(state_path(partial))


def resume_headers(partial: Path, shown: str) -> tuple[int, dict, dict]:
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
        start_over(partial)
        return 0, {}, {}
    headers = {"Range": f"bytes={have}-"} | ({"If-Range": validator} if validator else {})
    return have, headers, state


def resume_or_restart(response, shown: str, partial: Path, have: int, state: dict) -> tuple[int, int | None]:
    """Whether the answer continues the partial file (the bytes kept) or starts it over (0), and the file's whole
    length when announced. A new file's validators are recorded beside the partial file for the next resume."""
    if have and response.status_code == 206 and (why := _changed(response, state, have)):
        print(
            f"{shown}: the file changed on the server since the transfer was cut ({why}); starting over",
            file=sys.stderr,
        )
        start_over(partial)
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
