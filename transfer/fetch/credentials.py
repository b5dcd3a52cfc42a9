"""Who gets the credentials: only data.url's origin (scheme, host and port), and never over plain http.

Credentials come from ~/.netrc (or the file $NETRC names), from the user info of data.url, or from the environment:
DATA_TOKEN (sent as `Authorization: Bearer`) or DATA_HEADER (`Name: value`). requests alone would send them further:
it keeps a header such as DATA_HEADER's on every redirect, keeps Authorization on a redirect to another port or to
plain http of the same host, and reads ~/.netrc again for wherever a redirect leads. Here every request is checked
against the origin data.url names: a redirect anywhere else (another host, another port, https -> http) is followed
without credentials. Plain http is sent none, except to this machine itself (localhost, 127.0.0.1, ::1), which the
bytes never leave, and then only when no proxy is used for it: a proxy (http_proxy, all_proxy) would read a plain
http request whole, headers included, so through one even this machine's own server is sent none. A data.url on
plain http with credentials from the environment or its user info is refused. DATA_TOKEN and DATA_HEADER are
checked before any request (no line break, nothing outside Latin-1, which no header can carry), and every
credential is remembered by transfer/core/redact.py, which hides it wherever it would be printed.
"""

from __future__ import annotations

import os
import urllib.request
from importlib import metadata
from urllib.parse import urlsplit

import requests

from transfer.core.errors import StageError
from transfer.core.redact import redact, remember, remember_url

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


def proxy_for(url: str) -> str | None:
    """The proxy a request to `url` goes through (from http_proxy, https_proxy, all_proxy, less no_proxy), if any."""
    try:
        return requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
    except ValueError:
        return None


def encrypted(url: str) -> bool:
    """Whether what is sent to `url` stays private: https, or plain http to this machine itself with no proxy."""
    scheme, host, _ = origin(url)
    return scheme == "https" or (scheme == "http" and host in LOOPBACK and proxy_for(url) is None)


def may_receive(given_for: str, url: str) -> bool:
    """Whether a request to `url` may carry the credentials given for `given_for` (data.url)."""
    return origin(url) == origin(given_for) and encrypted(url)


def _check_value(variable: str, value: str) -> None:
    """Refuse, naming the variable and never the value, what no HTTP header can carry: requests and http.client
    would fail with the value in their error text (or send a second header after a line break)."""
    for position, character in enumerate(value, 1):
        if character in "\r\n" or ord(character) < 32 or ord(character) == 127:
            what = "a line break" if character in "\r\n" else f"the control character {ord(character):#04x}"
            raise StageError(
                f"{variable} holds {what} (character {position}), which an HTTP header cannot carry; set it again "
                "without it (a file read with `$(cat ...)` keeps its line ends: strip them)"
            )
        if ord(character) > 255:
            raise StageError(
                f"{variable} holds the character U+{ord(character):04X} (character {position}), outside the Latin-1 "
                "that HTTP headers carry; set it again as the service gave it (a typographic quote or space pasted "
                "with it?)"
            )


def environment_headers() -> dict[str, str]:
    """Credentials from the environment: DATA_TOKEN as `Authorization: Bearer`, DATA_HEADER as `Name: value`,
    checked before any request and remembered so that no message shows them."""
    headers = {}
    if token := os.environ.get(TOKEN_VARIABLE, "").strip():
        remember(token)
        _check_value(TOKEN_VARIABLE, token)
        headers["Authorization"] = f"Bearer {token}"
    if raw := os.environ.get(HEADER_VARIABLE, "").strip():
        name, colon, value = raw.partition(":")
        remember(value.strip())
        if (
            not colon
            or not name.strip()
            or not all(c.isascii() and c.isprintable() for c in name.strip())
            or (" " in name.strip())
        ):
            raise StageError(f"{HEADER_VARIABLE} must be 'Name: value' (e.g. 'PRIVATE-TOKEN: abc'); it has no 'Name:'")
        _check_value(HEADER_VARIABLE, value.strip())
        headers[name.strip()] = value.strip()
    return headers


def _remember_given(url: str) -> None:
    """The credentials requests would take from ~/.netrc and the proxy variables, to hide them in messages."""
    remember(*(requests.utils.get_netrc_auth(url) or ()))
    for proxy in urllib.request.getproxies().values():
        remember_url(proxy)


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
    _remember_given(url)
    extra = environment_headers()
    if not encrypted(url) and (extra or urlsplit(url).password):
        given = " and ".join(
            [v for v in (TOKEN_VARIABLE, HEADER_VARIABLE) if os.environ.get(v, "").strip()]
            + (["a password in data.url"] if urlsplit(url).password else [])
        )
        proxy = proxy_for(url)
        through = (
            f" (this machine's own server, but through the proxy {redact(proxy)} that http_proxy or all_proxy names, "
            f"which would read them; or add {origin(url)[1]} to no_proxy)"
            if proxy and origin(url)[1] in LOOPBACK
            else ""
        )
        raise StageError(
            f"data.url {redact(url)!r} is plain http, and credentials ({given}) are never sent unencrypted{through}; "
            f"use its https:// URL, or unset {given} if the file is public"
        )
    names = {"Authorization", "Proxy-Authorization", *extra}

    class OriginOnly(requests.Session):
        def rebuild_auth(self, prepared, response):
            remember_url(prepared.url)  # a signed URL's query is a credential too: never shown
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
