"""Fetching an archive from an http(s) URL, a file:// URL or a path: checksum-verified and resumable.

An interrupted HTTP transfer is kept under data/.partial/ (outside the stage's output, which DVC
deletes before each run) and resumed with a Range request. The file reaches data/raw/ only once its
md5 matches data.md5 and it is a zip or tar archive (an HTML page answered with 200 never sticks, even
with data.md5: null, so the next run fetches again). The file is named after the URL's path, or after
the server's Content-Disposition when that path names no file.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import sys
import tarfile
import time
from email.message import Message
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from transfer.errors import StageError
from transfer.files import atomic_output, remove

CHUNK = 1 << 20
# Network reads block until a whole chunk arrives and a dropped connection loses the chunk in flight,
# so read the network in smaller pieces: resuming then keeps all but the last 64 KiB.
NET_CHUNK = 1 << 16
# Client errors that retrying cannot fix.
PERMANENT_HTTP_ERRORS = {400, 401, 403, 404, 405, 410, 451}
# The first bytes of the archives the extract stage reads: zip (also an empty one), gzip, bzip2, xz.
ARCHIVE_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
OFFLINE_HINT = (
    "to work offline, put the archive on this machine and set data.url in params.yaml to its local "
    "path or a file:// URL"
)


class TransientError(Exception):
    """A failure worth retrying: dropped connection, timeout, 5xx, short body."""


def archive_name(url: str) -> str | None:
    """The file name the archive is saved under: the last path segment of the URL or path; None when the
    URL's path names no file (then the server's Content-Disposition names it)."""
    parsed = urlparse(url)
    path = parsed.path if parsed.scheme in ("http", "https", "file") else url
    return None if path.endswith("/") else _clean_name(unquote(path).rpartition("/")[2])


def _clean_name(name: str | None) -> str | None:
    """A bare file name (no folders, nothing hidden), or None."""
    name = PurePosixPath((name or "").replace("\\", "/")).name.strip()
    return name if name and not name.startswith(".") else None


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
        raise StageError(f"data.url {url!r}: unsupported scheme {parsed.scheme!r} (use http(s)://, file:// or a path)")
    return Path(url).expanduser()


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _progress(total: int | None, initial: int, name: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name, file=sys.stderr)


def _copy_local(source: Path, partial: Path) -> None:
    if not source.is_file():
        raise StageError(f"data.url points to {source}, which is not a file; fix data.url in params.yaml")
    with open(source, "rb") as src, open(partial, "wb") as dst, _progress(source.stat().st_size, 0, source.name) as bar:
        while chunk := src.read(CHUNK):
            dst.write(chunk)
            bar.update(len(chunk))


def _name_not_resolved(error: BaseException) -> bool:
    """Whether a requests error comes from a failed DNS look-up (no network, or a mistyped host)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, socket.gaierror) or type(error).__name__ == "NameResolutionError":
            return True
        # requests wraps urllib3's MaxRetryError, whose `reason` is the error that ended the retries.
        inner = [getattr(error, "reason", None), error.__cause__, error.__context__, *error.args]
        error = next((e for e in inner if isinstance(e, BaseException)), None)
    return False


def _http_attempt(session, url: str, partial: Path, timeout: float) -> str | None:
    """One GET, resuming from the partial file's size; return the name the server gives the file (from
    Content-Disposition or the URL it redirected to). Raises TransientError to ask for a retry."""
    import requests

    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
            status = response.status_code
            if status == 416:  # the partial file is not a prefix of what the server has now
                remove(partial)
                raise TransientError("server refused to resume (HTTP 416); starting over")
            if status in PERMANENT_HTTP_ERRORS:
                raise StageError(f"{url}: HTTP {status} {response.reason}; check data.url in params.yaml")
            if status >= 400:
                raise TransientError(f"HTTP {status} {response.reason}")
            resumed = status == 206 and response.headers.get("Content-Range", "").startswith(f"bytes {have}-")
            if have and not resumed:
                print(f"{url}: server does not support resuming; starting over", file=sys.stderr)
                have = 0
            served_name = disposition_name(response.headers.get("Content-Disposition")) or archive_name(response.url)
            length = response.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else None
            with open(partial, "ab" if have else "wb") as out, _progress(total, have, partial.name) as bar:
                for chunk in response.iter_content(NET_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except requests.ConnectionError as error:
        if _name_not_resolved(error):  # retrying for a minute would not bring the network back
            host = urlparse(url).hostname
            raise StageError(
                f"could not download {url}: cannot resolve the host name {host!r} (no network, "
                f"or a mistyped host); {OFFLINE_HINT}"
            ) from None
        raise TransientError(_reason(error)) from None
    except (requests.Timeout, requests.exceptions.ChunkedEncodingError) as error:
        # ChunkedEncodingError: the connection closed mid-body ("IncompleteRead"): resume it.
        raise TransientError(_reason(error)) from None
    except requests.RequestException as error:  # an invalid URL and the like: retrying cannot help
        raise StageError(f"could not download {url}: {error}; check data.url in params.yaml") from None
    size = partial.stat().st_size
    if total is not None and size < total:
        raise TransientError(f"connection closed after {size} of {total} bytes")
    return served_name


def _reason(error: Exception) -> str:
    """The innermost message of a requests/urllib3 error, e.g. 'Connection refused' or 'Read timed out'."""
    text = str(error)
    for marker in (
        "Connection refused",
        "Read timed out",
        "timed out",
        "Name or service not known",
        "Connection reset",
        "Connection broken",
    ):
        if marker in text:
            return marker
    return text.splitlines()[0][:200]


def _download_http(url: str, partial: Path, timeout: float, retries: int, backoff: float) -> str | None:
    import requests

    with requests.Session() as session:
        session.headers["User-Agent"] = "dvc-transfer-learning/1.0"
        for attempt in range(retries + 1):
            try:
                return _http_attempt(session, url, partial, timeout)
            except TransientError as error:
                if attempt == retries:
                    kept = (
                        f"; the partial file {partial} is kept and the next run resumes it" if partial.exists() else ""
                    )
                    raise StageError(f"could not download {url} after {retries + 1} attempts: {error}{kept}") from None
                wait = backoff * 2**attempt
                print(f"{url}: {error}; retrying in {wait:.0f} s ({attempt + 1}/{retries})", file=sys.stderr)
                time.sleep(wait)


def looks_like_archive(path: Path) -> bool:
    """Whether the file starts like a zip or a (compressed) tar, the formats the extract stage reads."""
    with open(path, "rb") as f:
        head = f.read(8)
    return head.startswith(ARCHIVE_MAGIC) or tarfile.is_tarfile(path)


def _not_an_archive(url: str, partial: Path) -> StageError:
    with open(partial, "rb") as f:
        head = f.read(512)
    html = b"<html" in head.lower() or b"<!doctype" in head.lower()
    what = "an HTML page (a login, consent or error page?)" if html else f"a file starting {head[:16]!r}"
    return StageError(
        f"{url} sent {what}, not a zip or tar archive; nothing was kept, so the next `dvc repro` "
        "downloads again. Check data.url in params.yaml (it must lead straight to the archive file)"
    )


def receive(
    url: str, partial_dir: Path, md5: str | None, timeout: float = 60.0, retries: int = 5, backoff: float = 2.0
) -> tuple[Path, str | None]:
    """Download or copy `url` into partial_dir and check it: its md5 when given, and that it is an archive.
    Return the checked file and the name the server gave it (None for a local file)."""
    partial_dir = Path(partial_dir)
    partial_dir.mkdir(parents=True, exist_ok=True)
    # One partial file per URL, so changing data.url never resumes the wrong file.
    partial = partial_dir / f"{hashlib.md5(url.encode()).hexdigest()[:12]}.part"
    source = local_source(url)
    served_name = None
    if source is not None:
        _copy_local(source, partial)
    else:
        served_name = _download_http(url, partial, timeout, retries, backoff)

    actual = file_md5(partial)
    if md5 is not None and actual != md5:
        remove(partial)
        raise StageError(
            f"checksum mismatch for {url}: expected md5 {md5}, got {actual}. The file was deleted; "
            "check data.url and data.md5 in params.yaml"
        )
    if not looks_like_archive(partial):
        error = _not_an_archive(url, partial)
        remove(partial)
        raise error
    if md5 is None:
        print(f"warning: data.md5 is null, so {url} is not verified (its md5 is {actual})", file=sys.stderr)
    return partial, served_name


def fetch(
    url: str,
    dest: Path,
    md5: str | None,
    partial_dir: Path,
    timeout: float = 60.0,
    retries: int = 5,
    backoff: float = 2.0,
) -> Path:
    """Download or copy `url` to `dest`, verifying `md5`; `dest` only ever holds a verified archive."""
    partial, _ = receive(url, partial_dir, md5, timeout, retries, backoff)
    with atomic_output(Path(dest)) as tmp:
        shutil.move(partial, tmp)
    return Path(dest)
