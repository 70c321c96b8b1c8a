"""The threaded HTTP(S) server under each local stand-in, on a free loopback port.

TLS handshakes run in each connection's own thread (a slow client never blocks accept), live
connections are tracked so that `close_live_connections()` ends keep-alive clients at stop.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

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
