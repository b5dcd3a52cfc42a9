"""A local HTTP file server for tests, with faults on demand: cut-off transfers, ignored Range
headers, error statuses, stalls and slow streams; and what repository servers do: redirects to a signed
URL with its own query string, Content-Disposition file names. Binds 127.0.0.1 only."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes = b""
    status: int = 200  # anything but 200 is answered as an error
    ignore_range: bool = False  # always send the whole file with 200
    cut_after: int | None = None  # close the connection after this many body bytes...
    cuts: int = 1  # ...on this many requests
    stall: float = 0.0  # sleep this long before sending the body
    bytes_per_second: int | None = None  # throttle the body
    redirect: str | None = None  # answer 302 with this Location (a path, query string included)
    headers: dict[str, str] = field(default_factory=dict)  # sent with every 200/206 answer
    requests: list[dict] = field(default_factory=list)  # the Range header and query string of each request


class FileServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                path, _, query = self.path.partition("?")
                route = server.routes.get(path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                route.requests.append({"range": self.headers.get("Range"), "query": query})
                if route.redirect is not None:
                    self.send_response(302)
                    self.send_header("Location", route.redirect)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if route.status != 200:
                    self.send_error(route.status)
                    return
                start = 0
                header = self.headers.get("Range")
                if header and not route.ignore_range:
                    start = int(header.removeprefix("bytes=").split("-")[0])
                    if start >= len(route.body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(route.body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(route.body) - 1}/{len(route.body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(route.body) - start))
                self.send_header("Accept-Ranges", "none" if route.ignore_range else "bytes")
                for name, value in route.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                time.sleep(route.stall)
                body = route.body[start:]
                if route.cut_after is not None and route.cuts > 0:
                    route.cuts -= 1
                    body = body[: route.cut_after]
                    self.close_connection = True
                self._send(body, route.bytes_per_second)

            def _send(self, body: bytes, rate: int | None) -> None:
                step = max(1, rate // 20) if rate else len(body) or 1
                try:
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

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, path: str, body: bytes, **faults) -> str:
        """Serve `body` at `path` with the given faults; return its URL."""
        self.routes[path] = Route(body=body, **faults)
        return self.base + path

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
