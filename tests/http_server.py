"""A local HTTP file server for tests that behaves as real file servers do, with faults on demand.

As real servers: a strong ETag and a Last-Modified date on every file, `If-Range` honoured (a changed file is sent
whole with 200), `Range` answered with 206 and Content-Range (416 past the end), extra headers such as
`Content-Encoding: gzip` on a .tar.gz served as application/x-tar (S3, Apache), credentials checked (401),
redirects to a signed URL with its own query string, Content-Disposition file names, HTTP/1.0 bodies with no
Content-Length ended by closing the connection. Faults: cut-off transfers, ignored Range headers, error statuses
(with Retry-After), stalls before or in the middle of the body, slow streams. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Route:
    body: bytes = b""
    status: int = 200  # anything but 200 is answered as an error...
    errors: int | None = None  # ...on this many requests (None: on all of them), then the file is served
    error_headers: dict[str, str] = field(default_factory=dict)  # sent with the error, e.g. Retry-After
    ignore_range: bool = False  # always send the whole file with 200
    cut_after: int | None = None  # close the connection after this many body bytes...
    cuts: int = 1  # ...on this many requests
    stall: float = 0.0  # wait this long before sending the body
    stall_after: int | None = None  # or after this many body bytes (the connection stays open)...
    stalls: int = 1  # ...on this many requests
    bytes_per_second: int | None = None  # throttle the body
    redirect: str | None = None  # answer 302 with this Location (a path, query string included)
    headers: dict[str, str] = field(default_factory=dict)  # sent with every 200/206 answer
    no_length: bool = False  # no Content-Length: the body ends when the connection closes (HTTP/1.0)
    validators: bool = True  # send ETag and Last-Modified, and honour If-Range
    require: dict[str, str] = field(default_factory=dict)  # headers a request must carry, else 401
    requests: list[dict] = field(default_factory=list)  # what each request asked for

    @property
    def etag(self) -> str:
        return '"' + hashlib.md5(self.body).hexdigest() + '"'  # changes whenever the body is replaced

    modified: float = field(default_factory=lambda: time.time() - 3600)

    @property
    def last_modified(self) -> str:
        return formatdate(self.modified, usegmt=True)


class FileServer:
    def __init__(self, folder: Path | None = None) -> None:
        """`folder`: also serve the files below it (read when first asked for), as a plain file server would."""
        self.routes: dict[str, Route] = {}
        self.folder = folder
        self.closing = threading.Event()  # ends stalls at shutdown
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                path, _, query = self.path.partition("?")
                route = server.routes.get(path) or server.from_folder(path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                route.requests.append(
                    {
                        "range": self.headers.get("Range"),
                        "if_range": self.headers.get("If-Range"),
                        "query": query,
                        "headers": dict(self.headers),
                    }
                )
                if any(self.headers.get(name) != value for name, value in route.require.items()):
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="data"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if route.redirect is not None:
                    self.send_response(302)
                    self.send_header("Location", route.redirect)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if route.status != 200 and (route.errors is None or route.errors > 0):
                    if route.errors is not None:
                        route.errors -= 1
                    self.send_response(route.status)
                    for name, value in route.error_headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._serve(route)

            def _range_start(self, route: Route) -> int:
                header = self.headers.get("Range")
                if not header or route.ignore_range:
                    return 0
                if_range = self.headers.get("If-Range")
                if if_range is not None and (not route.validators or if_range not in (route.etag, route.last_modified)):
                    return 0  # RFC 9110 13.1.5: the file changed, so send all of it
                return int(header.removeprefix("bytes=").split("-")[0])

            def _serve(self, route: Route) -> None:
                size = len(route.body)
                start = self._range_start(route)
                if start and start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if start:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                else:
                    self.send_response(200)
                if not route.no_length:
                    self.send_header("Content-Length", str(size - start))
                self.send_header("Accept-Ranges", "none" if route.ignore_range else "bytes")
                if route.validators:
                    self.send_header("ETag", route.etag)
                    self.send_header("Last-Modified", route.last_modified)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                server.closing.wait(route.stall)
                body = route.body[start:]
                if route.cut_after is not None and route.cuts > 0:
                    route.cuts -= 1
                    body = body[: route.cut_after]
                    self.close_connection = True
                stall_at = None
                if route.stall_after is not None and route.stalls > 0:
                    route.stalls -= 1
                    stall_at = route.stall_after
                self._send(body, route.bytes_per_second, stall_at)

            def _send(self, body: bytes, rate: int | None, stall_at: int | None) -> None:
                step = max(1, rate // 20) if rate else len(body) or 1
                try:
                    if stall_at is not None:  # send the first part, then hold the connection open, silent
                        self.wfile.write(body[:stall_at])
                        self.wfile.flush()
                        server.closing.wait(30)
                        self.close_connection = True
                        return
                    for i in range(0, len(body), step):
                        self.wfile.write(body[i : i + step])
                        self.wfile.flush()
                        if rate:
                            time.sleep(step / rate)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def from_folder(self, path: str) -> Route | None:
        if self.folder is None or ".." in path.split("/"):
            return None
        file = self.folder / path.lstrip("/")
        if not file.is_file():
            return None
        self.routes[path] = Route(body=file.read_bytes())
        return self.routes[path]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, path: str, body: bytes, **faults) -> str:
        """Serve `body` at `path` with the given faults; return its URL."""
        self.routes[path] = Route(body=body, **faults)
        return self.base + path

    def replace(self, path: str, body: bytes) -> None:
        """The file on the server changes (new ETag, new Last-Modified), keeping the route's faults."""
        route = self.routes[path]
        route.body, route.modified = body, route.modified + 60

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
