"""The threaded HTTP(S) server under each local stand-in, on a free loopback port, and the base of
the stand-ins that run such servers (`LoopbackService`: start, stop, context manager).

TLS handshakes run in each connection's own thread (a slow client never blocks accept), live
connections are tracked so that `close_live_connections()` ends keep-alive clients at stop.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["LoopbackHandler", "LoopbackServer", "LoopbackService"]

_LOG = logging.getLogger(__name__)


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = False

    def __init__(
        self,
        host: str,
        handler: type,
        name: str,
        ssl_context: ssl.SSLContext | None = None,
        on_connect: Callable[[], int] | None = None,
    ):
        self.name = name
        self.ssl_context = ssl_context
        self.on_connect = on_connect  # called once per connection; its result is the connection's conn_id (TLS only)
        self._live: set = set()
        self._live_lock = threading.Lock()
        super().__init__((host, 0), handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def finish_request(self, request: socket.socket, client_address: Any) -> None:
        connection = request
        if self.ssl_context is not None:
            try:
                request.settimeout(30)
                connection = self.ssl_context.wrap_socket(request, server_side=True)
                connection.settimeout(None)
            except (OSError, ssl.SSLError) as exc:
                _LOG.debug("%s: TLS handshake failed: %s", self.name, exc)
                return
            if self.on_connect is not None:
                connection.conn_id = self.on_connect()  # type: ignore[attr-defined]
        with self._live_lock:
            self._live.add(connection)
        try:
            self.RequestHandlerClass(connection, client_address, self)
        except (OSError, ssl.SSLError):
            pass
        finally:
            with self._live_lock:
                self._live.discard(connection)
            with contextlib.suppress(OSError):
                connection.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        _LOG.debug("%s: error while handling a connection", self.name, exc_info=True)

    def close_live_connections(self) -> None:
        with self._live_lock:
            live = list(self._live)
        for connection in live:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class LoopbackHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 (keep-alive) request handler of a stand-in."""

    protocol_version = "HTTP/1.1"

    def hang_up(self) -> None:
        """Close the connection without (or instead of) an answer."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.request.shutdown(socket.SHUT_RDWR)


class LoopbackService:
    """A stand-in served by one or more :class:`LoopbackServer`, each in a daemon thread.

    Subclasses build their listeners in :meth:`_listen` (called by :meth:`start`, which does
    nothing while running); :meth:`_ending` runs at :meth:`stop` once :attr:`running` is False and
    before the listeners close (release held requests there), :meth:`_ended` at the end of every
    :meth:`stop`.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._servers: list[LoopbackServer] = []
        self._threads: list[threading.Thread] = []

    def _listen(self) -> list[LoopbackServer]:
        raise NotImplementedError

    def _ending(self) -> None:
        """Hook: the service is stopping (``running`` is already False)."""

    def _ended(self) -> None:
        """Hook: the listeners are closed (also called when the service never started)."""

    @property
    def running(self) -> bool:
        return bool(self._servers)

    def _hold(self, window: threading.Condition, until: Callable[[], float]) -> None:
        """With ``window`` held: wait until ``until()`` (a ``time.monotonic()`` value, read again at
        each notify) has passed or the service stops."""
        while self.running:
            left = until() - time.monotonic()
            if left <= 0:
                return
            window.wait(left)

    def _listener(self, index: int = 0) -> LoopbackServer:
        """The ``index``-th listener; RuntimeError when not started."""
        if not self._servers:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._servers[index]

    def start(self) -> Self:
        if self._servers:
            return self
        self._servers = list(self._listen())
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=server.name, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        servers, self._servers = self._servers, []
        if servers:
            self._ending()
        for server in servers:
            server.shutdown()
            server.server_close()
            server.close_live_connections()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        self._ended()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
