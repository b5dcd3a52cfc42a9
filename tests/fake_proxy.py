"""A local HTTP proxy for tests that records everything it receives, as a real forward proxy would see it.

A plain-http request reaches a proxy whole (`GET http://host/path?query`, every header); an https one arrives as
`CONNECT host:port`, then bytes the proxy relays without reading them (TLS). This one forwards both, or answers
`status` (502, 407...) instead, and keeps in `seen` each request line, its headers and every byte it relayed from
the client. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class RecordingProxy:
    def __init__(self, status: int | None = None) -> None:
        self.status = status
        self.seen: list[dict] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _record(self) -> dict:
                entry = {"line": self.requestline, "headers": dict(self.headers), "relayed": b""}
                proxy.seen.append(entry)
                return entry

            def _refuse(self) -> bool:
                if proxy.status is None:
                    return False
                self.send_response(proxy.status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return True

            def do_GET(self):
                self._record()
                if self._refuse():
                    return
                target = urlsplit(self.path)
                upstream = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=30)
                path = target.path + (f"?{target.query}" if target.query else "")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "host")}
                upstream.request("GET", path, headers={"Host": target.netloc, **headers})
                answer = upstream.getresponse()
                body = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                upstream.close()

            def do_CONNECT(self):
                entry = self._record()
                if self._refuse():
                    return
                host, _, port = self.path.rpartition(":")
                upstream = socket.create_connection((host, int(port)), timeout=30)
                self.send_response(200, "Connection established")
                self.end_headers()
                self.wfile.flush()
                client = self.connection
                try:
                    while True:
                        ready, _, _ = select.select([client, upstream], [], [], 30)
                        if not ready:
                            break
                        for source in ready:
                            data = source.recv(1 << 16)
                            if not data:
                                return
                            if source is client:
                                entry["relayed"] += data
                            (upstream if source is client else client).sendall(data)
                except OSError:
                    pass
                finally:
                    upstream.close()
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> RecordingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
