"""What a failed request means, in words that show no secret: whether a retry can help, and which host failed.

requests and urllib3 quote the URL they failed on in their error text (`Max retries exceeded with url:
/path?X-Amz-Signature=...`), and a redirect's target is often a signed URL: the text shown is the innermost cause
(`Connection refused`, `certificate verify failed: self-signed certificate`), redacted (transfer/core/redact.py),
with the failing place named by host when it is not data.url's own.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Iterator
from urllib.parse import urlsplit

import requests
import urllib3

from transfer.core.errors import StageError
from transfer.core.redact import redact, redact_text
from transfer.fetch.credentials import proxy_for

OFFLINE_HINT = (
    "to work offline, put the archive on this machine and set data.url in params.yaml to its local "
    "path or a file:// URL"
)
CA_HINT = (
    "if the server is the right one and its certificate comes from an authority of your own (a company network "
    "that inspects TLS, a private server), set REQUESTS_CA_BUNDLE to that authority's certificate file (PEM) and "
    "rerun (docs/downloads.md)"
)
# The OS's words for these are clear as they are ("Connection refused", "Network is unreachable").
_OS_ERRORS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
    errno.ENETDOWN,
    errno.EHOSTDOWN,
    errno.ETIMEDOUT,
    errno.EPIPE,
}
_MARKERS = ("Read timed out", "timed out", "Connection reset", "Connection broken")
MAX_REASON = 300


class PastDeadline(Exception):
    """The time limit passed while the transfer was still under way."""


class TransientError(Exception):
    """A failure worth retrying: dropped connection, stall, 5xx, short body. `retry_after`: the server's wait."""

    def __init__(self, message: str, retry_after: float | None = None, at_once: bool = False):
        super().__init__(message)
        self.retry_after, self.at_once = retry_after, at_once


def causes(error: BaseException | None) -> Iterator[BaseException]:
    """The error and every error inside it: urllib3's `reason`, chained causes and exceptions among the args."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        inner = [getattr(current, "reason", None), current.__cause__, current.__context__, *current.args]
        todo += [e for e in inner if isinstance(e, BaseException)]


def describe(error: BaseException) -> str:
    """The cause of a network error in a few words, e.g. 'Connection refused' or 'Read timed out', never
    quoting a URL's query or credentials."""
    chain = list(causes(error))
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"its TLS certificate is not trusted ({cause.verify_message or cause.reason})"
        if isinstance(cause, OSError) and cause.errno in _OS_ERRORS and cause.strerror:
            return cause.strerror
    text = " ".join(str(cause) for cause in chain)
    for marker in _MARKERS:
        if marker in text:
            return marker
    inner = chain[-1]
    text = redact_text((str(inner).strip().splitlines() or [""])[0]) or type(inner).__name__
    return text if len(text) <= MAX_REASON else text[:MAX_REASON].rsplit(" ", 1)[0] + " ..."


def failed_url(error: BaseException, url: str) -> str:
    """The URL of the request that failed: data.url, or where a redirect led."""
    request = getattr(error, "request", None)
    return getattr(request, "url", None) or url


def where(error: BaseException, url: str) -> str:
    """' (redirected to https://host/path?***)' when the request that failed was not to data.url's host."""
    failed = failed_url(error, url)
    same = urlsplit(failed).netloc.rpartition("@")[2] == urlsplit(url).netloc.rpartition("@")[2]
    return "" if same else f" (redirected to {redact(failed)})"


def _name_not_resolved(error: BaseException) -> bool:
    return any(
        isinstance(cause, socket.gaierror) or type(cause).__name__ == "NameResolutionError" for cause in causes(error)
    )


def failure(error: requests.RequestException, url: str, shown: str) -> Exception:
    """The exception a failed request becomes: StageError when retrying cannot help (an unknown host, a certificate
    not trusted, an invalid URL), else TransientError. `shown`: data.url, redacted."""
    failed = failed_url(error, url)
    host = urlsplit(failed).hostname or "?"
    proxy = proxy_for(failed)
    proxy_errors = (requests.exceptions.ProxyError, urllib3.exceptions.ProxyError)
    if proxy and any(isinstance(cause, proxy_errors) for cause in causes(error)):
        return TransientError(
            f"the proxy {redact(proxy)} (from https_proxy, http_proxy or all_proxy) failed for {host}: "
            f"{describe(error)}; check the proxy, or add {host} to no_proxy{where(error, url)}"
        )
    if _name_not_resolved(error):  # retrying for a minute would not bring the network back
        return StageError(
            f"could not download {shown}: cannot resolve the host name {host!r} (no network, or a mistyped host)"
            f"{where(error, url)}; {OFFLINE_HINT}"
        )
    if any(isinstance(cause, ssl.SSLCertVerificationError) for cause in causes(error)):
        return StageError(
            f"could not download {shown}: {host}: {describe(error)}{where(error, url)}; {CA_HINT}; nothing was kept"
        )
    if isinstance(error, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)):
        return TransientError(f"{describe(error)}{where(error, url)}")
    # An invalid URL and the like: retrying cannot help.
    return StageError(
        f"could not download {shown}: {describe(error)}{where(error, url)}; check data.url in params.yaml"
    )
