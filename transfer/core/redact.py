"""The one place URLs are made safe to show: every message, warning, progress bar and error goes through here.

A URL's user name and password (`https://user:pass@host/...`) and its query string (`?token=...`, a signed URL's
`X-Amz-Signature=...`) are secrets as often as not, so they are replaced by `***`; the scheme, host, port and path
stay, which is what a user needs to recognise the URL.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit, urlunsplit

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


# Query keys that name a credential: tokens, signatures (S3's X-Amz-Signature, Azure's sig), keys, passwords.
_CREDENTIAL_KEY = re.compile(r"token|sig|key|pass|secret|auth|credential|pwd", re.IGNORECASE)


def credentials_in(url: str) -> str | None:
    """What in `url` is a credential, in words (its user info, or a query key naming one); None when nothing is."""
    if "://" not in url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if "@" in parts.netloc:
        return "user info (user:password@)"
    keys = [key for key, _ in parse_qsl(parts.query, keep_blank_values=True) if _CREDENTIAL_KEY.search(key)]
    return f"a credential in its query string ({keys[0]}=...)" if keys else None
