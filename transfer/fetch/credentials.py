"""Who gets the credentials: only data.url's origin (scheme, host and port), and never over plain http.

Credentials come from ~/.netrc (or the file $NETRC names), from the user info of data.url, or from the environment:
DATA_TOKEN (sent as `Authorization: Bearer`) or DATA_HEADER (`Name: value`). requests alone would send them further:
it keeps a header such as DATA_HEADER's on every redirect, keeps Authorization on a redirect to another port or to
plain http of the same host, and reads ~/.netrc again for wherever a redirect leads. Here every request is checked
against the origin data.url names: a redirect anywhere else (another host, another port, https -> http) is followed
without credentials. Plain http is sent none, except to this machine itself (localhost, 127.0.0.1, ::1), which the
bytes never leave; a data.url on plain http with credentials from the environment or its user info is refused.
"""

from __future__ import annotations

import os
from importlib import metadata
from urllib.parse import urlsplit

import requests

from transfer.core.errors import StageError
from transfer.core.redact import redact

TOKEN_VARIABLE, HEADER_VARIABLE = "DATA_TOKEN", "DATA_HEADER"
CREDENTIALS_HINT = (
    "if the file needs credentials, put them in ~/.netrc (or the file $NETRC names), or set the environment "
    f"variable {TOKEN_VARIABLE} (a bearer token) or {HEADER_VARIABLE} ('Name: value'); never in params.yaml, "
    "which dvc.lock copies (docs/downloads.md)"
)
LOOPBACK = {"localhost", "127.0.0.1", "::1"}
DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, the port filled in from the scheme."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or DEFAULT_PORTS.get(scheme)


def encrypted(url: str) -> bool:
    """Whether what is sent to `url` stays private: https, or plain http to this machine itself."""
    scheme, host, _ = origin(url)
    return scheme == "https" or (scheme == "http" and host in LOOPBACK)


def may_receive(given_for: str, url: str) -> bool:
    """Whether a request to `url` may carry the credentials given for `given_for` (data.url)."""
    return origin(url) == origin(given_for) and encrypted(url)


def environment_headers() -> dict[str, str]:
    """Credentials from the environment: DATA_TOKEN as `Authorization: Bearer`, DATA_HEADER as `Name: value`."""
    headers = {}
    if token := os.environ.get(TOKEN_VARIABLE, "").strip():
        headers["Authorization"] = f"Bearer {token}"
    if raw := os.environ.get(HEADER_VARIABLE, "").strip():
        name, colon, value = raw.partition(":")
        if not colon or not name.strip() or " " in name.strip():
            raise StageError(f"{HEADER_VARIABLE} must be 'Name: value' (e.g. 'PRIVATE-TOKEN: abc'); it has no 'Name:'")
        headers[name.strip()] = value.strip()
    return headers


class _Headers(requests.auth.AuthBase):
    def __init__(self, headers: dict[str, str]):
        self.headers = headers

    def __call__(self, request):
        request.headers.update(self.headers)
        return request


def user_agent() -> str:
    """This package's name and version, from its installed metadata (pyproject.toml's one version): read at run
    time, so a version bump is no code change that would make dvc download the archive again."""
    try:
        return f"dvc-transfer-learning/{metadata.version('dvc-transfer-learning')}"
    except metadata.PackageNotFoundError:  # a checkout run without `pip install -e .` (setup.sh does it)
        return "dvc-transfer-learning"


def session(url: str) -> requests.Session:
    """A session that sends the credentials for data.url to its origin only, and none over plain http."""
    extra = environment_headers()
    if not encrypted(url) and (extra or urlsplit(url).password):
        given = " and ".join(
            [v for v in (TOKEN_VARIABLE, HEADER_VARIABLE) if os.environ.get(v, "").strip()]
            + (["a password in data.url"] if urlsplit(url).password else [])
        )
        raise StageError(
            f"data.url {redact(url)!r} is plain http, and credentials ({given}) are never sent unencrypted; use its "
            f"https:// URL, or unset {given} if the file is public"
        )
    names = {"Authorization", "Proxy-Authorization", *extra}

    class OriginOnly(requests.Session):
        def rebuild_auth(self, prepared, response):
            if not may_receive(url, prepared.url):
                for name in names:
                    prepared.headers.pop(name, None)
            elif not extra:  # the same origin: requests' own handling (~/.netrc for it) is right
                super().rebuild_auth(prepared, response)

    result = OriginOnly()
    result.headers.update({"User-Agent": user_agent(), "Accept-Encoding": "identity"})
    if extra:
        result.auth = _Headers(extra)  # takes precedence over ~/.netrc
    elif not encrypted(url):
        result.auth = lambda request: request  # no ~/.netrc password over plain http
    return result
