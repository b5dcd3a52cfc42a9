"""The time limit over the whole exchange with a server: connecting, the TLS handshake, the answer's status line and
headers, redirects, and the body.

A read timeout restarts with every byte, so a server that sends its answer a byte at a time never trips it. Here
every connection the session opens is watched: when the deadline passes, a timer shuts the connection's socket down
from outside, so whatever read is waiting returns at once, and the caller sees `passed`. The body is also checked
between reads. Not covered: the host name look-up, which the C library does with its own time-outs.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterator

import requests
from requests.adapters import HTTPAdapter


class Deadline:
    """A moment on time.monotonic()'s clock by which the exchange must end."""

    def __init__(self, at: float):
        self.at, self.passed = at, False
        self._connections: weakref.WeakSet = weakref.WeakSet()
        self._lock = threading.Lock()

    def left(self) -> float:
        return self.at - time.monotonic()

    def timeout(self, per_read: float) -> float:
        """A read or connect time-out that cannot wait past the deadline either."""
        return max(0.1, min(per_read, self.left()))

    def watch(self, connection) -> None:
        with self._lock:
            self._connections.add(connection)
        if self.passed:
            self._shut(connection)

    @contextlib.contextmanager
    def enforced(self) -> Iterator[None]:
        """Within the block, the watched connections are shut down when the deadline passes."""
        timer = threading.Timer(max(0.0, self.left()), self._expire)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def _expire(self) -> None:
        self.passed = True
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            self._shut(connection)

    @staticmethod
    def _shut(connection) -> None:
        sock = getattr(connection, "sock", None)
        if sock is None:
            return
        # During a TLS handshake the plain socket has handed its descriptor to the TLS one: shut that down.
        fd = sock.fileno() if sock.fileno() != -1 else getattr(connection, "_watched_fd", -1)
        if fd == -1:
            return
        with contextlib.suppress(OSError):
            twin = socket.socket(fileno=os.dup(fd))
            try:
                twin.shutdown(socket.SHUT_RDWR)  # acts on the connection, not only on this descriptor
            finally:
                twin.close()


def _watching(pool_class, deadline: Deadline):
    """`pool_class` whose connections tell `deadline` about their socket as soon as it exists."""

    class Connection(pool_class.ConnectionCls):
        def _new_conn(self):
            sock = super()._new_conn()
            self._watched_fd = sock.fileno()
            self.sock = sock  # set before any TLS handshake, so that the deadline can reach it
            deadline.watch(self)
            return sock

    return type(pool_class.__name__, (pool_class,), {"ConnectionCls": Connection})


class _DeadlineAdapter(HTTPAdapter):
    def __init__(self, deadline: Deadline):
        self.deadline = deadline
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            scheme: _watching(pool, self.deadline) for scheme, pool in self.poolmanager.pool_classes_by_scheme.items()
        }

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)  # made once per proxy, then reused
        if not getattr(manager, "watched", False):
            manager.pool_classes_by_scheme = {
                scheme: _watching(pool, self.deadline) for scheme, pool in manager.pool_classes_by_scheme.items()
            }
            manager.watched = True
        return manager


def watch(session: requests.Session, deadline: Deadline) -> None:
    """Every connection `session` opens from now on is shut down when `deadline` passes (within enforced())."""
    adapter = _DeadlineAdapter(deadline)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
