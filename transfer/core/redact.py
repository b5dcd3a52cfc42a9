"""The one place URLs are made safe to show: every message, warning, progress bar and error goes through here.

A URL's user name and password (`https://user:pass@host/...`) and its query string (`?token=...`, a signed URL's
`X-Amz-Signature=...`) are secrets as often as not, so they are replaced by `***`; the scheme, host, port and path
stay, which is what a user needs to recognise the URL.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact(url: str) -> str:
    """`url` without its credentials, query string or fragment; a local path is returned as it is."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:  # not parseable: show only the scheme
        return url.partition("://")[0] + "://***"
    netloc = f"***@{host}" if "@" in parts.netloc else host
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted (error messages of libraries quote the URL they failed on)."""
    return _URL.sub(lambda match: redact(match.group(0)), text)
