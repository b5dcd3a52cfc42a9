"""The one place text is made safe to show: every message, warning, progress bar, retry line and error goes through
here, the error text of libraries (requests, urllib3, an OSError) included.

A URL's user name and password (`https://user:pass@host/...`), its query string (`?token=...`, a signed URL's
`X-Amz-Signature=...`) and its path parameters (`/file;token=...`) are secrets as often as not, so they are replaced
by `***`; the scheme, host, port and path stay, which is what a user needs to recognise the URL. Libraries quote a
URL's path and query without its host (urllib3: `with url: /path?query`), and an Authorization header's value
(`Bearer ...`): both are hidden too. Whatever a process was given as a credential (DATA_TOKEN, DATA_HEADER's value, a
netrc or proxy password, the query of each URL a redirect led to) is remembered, and hidden wherever it appears:
cli.run passes everything a stage prints through mask_secrets.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
# A path with a query or path parameters as libraries quote it, without scheme and host (`url: /x.zip?sig=...`).
_PATH_QUERY = re.compile(r"(?<![\w.~-])(/[^\s'\"<>?;]*)([?;][^\s'\"<>]+)")
_AUTHORIZATION = re.compile(r"\b(Bearer|Basic|Digest|Token)\s+[^\s'\"<>,)]+")
# Shorter values are not remembered: hiding every "1" of a message would hide more than the secret.
MIN_SECRET = 4
_secrets: set[str] = set()


def remember(*values: str | None) -> None:
    """Hide these values (credentials this process was given) wherever they appear in what it prints."""
    for value in values:
        if value and len(value) >= MIN_SECRET:
            _secrets.update({value, quote(value, safe=""), unquote(value)} - {""})


def remember_url(url: str) -> None:
    """Remember a URL's user info, its whole query string and path parameters, and each value of a credential among
    them (`X-Amz-Signature=...`, a JWT): a URL a redirect led to (a signed storage URL) carries its credentials
    there. Other values (`?file=photos.zip`) are not remembered, so messages still name them elsewhere."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    userinfo = parts.netloc.rpartition("@")[0]
    remember(userinfo, *userinfo.split(":"), parts.query, parts.fragment)
    parameters = [p for segment in parts.path.split("/") for p in segment.split(";")[1:]]
    pairs = parse_qsl(parts.query, keep_blank_values=True) + [tuple(p.partition("=")[::2]) for p in parameters]
    remember(*parameters, *(value for key, value in pairs if _CREDENTIAL_KEY.search(key) or _JWT.search(value)))


def forget() -> None:
    """Forget every remembered credential (tests run many downloads in one process)."""
    _secrets.clear()


def mask_secrets(text: str) -> str:
    """`text` with every remembered credential replaced by ***."""
    for secret in sorted((s for s in _secrets if s in text), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def redact(url: str) -> str:
    """`url` without its credentials, query string, path parameters or fragment; a local path is returned as it is."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:  # not parseable: show only the scheme
        return url.partition("://")[0] + "://***"
    netloc = f"***@{host}" if "@" in parts.netloc else host
    path = re.sub(r";[^/]*", ";***", parts.path)
    return mask_secrets(urlunsplit((parts.scheme, netloc, path, "***" if parts.query else "", "")))


def redact_text(text: str) -> str:
    """`text` (a message, or a library's error text) with every URL, quoted path query, Authorization value and
    remembered credential in it hidden."""
    text = _URL.sub(lambda match: redact(match.group(0)), text)
    text = _PATH_QUERY.sub(lambda match: match.group(1) + match.group(2)[0] + "***", text)
    return mask_secrets(_AUTHORIZATION.sub(lambda match: match.group(1) + " ***", text))


# Query keys that name a credential: tokens (access_token, jwt), signatures (S3's X-Amz-Signature, Azure's sig,
# Google's X-Goog-Signature), keys, passwords, sessions.
_CREDENTIAL_KEY = re.compile(r"token|sig|key|pass|secret|auth|credential|pwd|jwt|session|bearer|otp", re.IGNORECASE)
# A JSON Web Token, whatever its key: three base64url parts, the first a JSON object ({" is eyJ).
_JWT = re.compile(r"eyJ[\w-]*\.[\w-]+\.[\w-]*")


def credentials_in(url: str) -> str | None:
    """What in `url` is a credential, in words (its user info, or a query key or path parameter naming one); None
    when nothing is. Raises ValueError for a URL that does not parse (then nothing can be said of it)."""
    if "://" not in url:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:  # a bracket left open, a port that is no number: refused, and named without the URL
        raise ValueError(
            "is not a URL that can be read (check its [brackets] and :port); write it as https://host/path, "
            "file:///path or a path"
        ) from None
    if "@" in parts.netloc:
        return "user info (user:password@)"
    pairs = parse_qsl(parts.query, keep_blank_values=True) + parse_qsl(parts.fragment, keep_blank_values=True)
    keys = [key for key, value in pairs if _CREDENTIAL_KEY.search(key) or _JWT.search(value)]
    if keys:
        return f"a credential in its query string ({keys[0]}=...)"
    parameters = [p for segment in parts.path.split("/") for p in segment.split(";")[1:]]
    named = [p.partition("=")[0] for p in parameters if _CREDENTIAL_KEY.search(p.partition("=")[0]) or _JWT.search(p)]
    if named:
        return f"a credential in a path parameter (;{named[0]}=...)"
    return None
