"""A local stand-in for an Event Grid custom topic's publish endpoint, over HTTPS on 127.0.0.1.

It takes what `azure.eventgrid.EventGridPublisherClient` sends for CloudEvents
(`POST /api/events?api-version=2018-01-01`, `Content-Type: application/cloudevents-batch+json`,
a JSON array of CloudEvents 1.0) and checks the bearer token's audience with the identity
endpoint that issued it. `outage = True` makes it answer 503 until set back.

    with EventGridEndpoint(ca, identity) as topic:
        topic.endpoint          # https://127.0.0.1:PORT/api/events
        topic.events            # every CloudEvent it accepted, in order
"""

from __future__ import annotations

import json
import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from localdev.servers import LoopbackServer

AUDIENCE = "https://eventgrid.azure.net"
REQUIRED = ("specversion", "id", "source", "type")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        topic = self.server.topic
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, problem = topic._check(self.path, dict(self.headers), body)
        payload = b"" if status == 200 else json.dumps({"error": {"code": "BadRequest", "message": problem}}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        if payload:
            self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass  # requests carry tokens; nothing is logged


class _Server(LoopbackServer):
    topic: EventGridEndpoint


class EventGridEndpoint:
    def __init__(self, ca, identity, host: str = "127.0.0.1"):
        self._ca = ca
        self._identity = identity
        self._host = host
        self._lock = threading.Lock()
        self.events: list[dict] = []  # accepted CloudEvents
        self.batches = 0  # accepted POSTs
        self.rejected: list[str] = []  # why each refused POST was refused (outages excluded)
        self.refused_during_outage = 0
        self.outage = False
        self._server: _Server | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="eventgrid-")

    def start(self) -> EventGridEndpoint:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert(self._host, "localhost").configure_cert(context)
        self._server = _Server(self._host, _Handler, "eventgrid-endpoint", ssl_context=context)
        self._server.topic = self
        threading.Thread(target=self._server.serve_forever, name="eventgrid-endpoint", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.close_live_connections()
            self._server.server_close()
            self._server = None
        self._tmp.cleanup()

    def __enter__(self) -> EventGridEndpoint:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"https://{self._host}:{self._server.port}/api/events"

    @property
    def ca_bundle_path(self) -> str:
        path = Path(self._tmp.name) / "ca.pem"
        if not path.exists():
            self._ca.cert_pem.write_to_path(str(path))
        return str(path)

    def clear(self) -> None:
        with self._lock:
            self.events.clear()
            self.rejected.clear()
            self.batches = 0
            self.refused_during_outage = 0
            self.outage = False

    def _check(self, path: str, headers: dict, body: bytes) -> tuple[int, str]:
        with self._lock:
            if self.outage:
                self.refused_during_outage += 1
                return 503, "outage"
            problem = self._problem(path, {k.lower(): v for k, v in headers.items()}, body)
            if problem:
                self.rejected.append(problem)
                return (401 if "token" in problem else 400), problem
            self.events.extend(json.loads(body))
            self.batches += 1
            return 200, ""

    def _problem(self, path: str, headers: dict, body: bytes) -> str | None:
        if not path.startswith("/api/events?") or "api-version=" not in path:
            return f"unexpected path {path}"
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not self._identity.verify(auth[7:], AUDIENCE):
            return f"no bearer token for {AUDIENCE}"
        if not headers.get("content-type", "").startswith("application/cloudevents-batch+json"):
            return f"content type {headers.get('content-type')!r} is not application/cloudevents-batch+json"
        try:
            batch = json.loads(body)
        except ValueError:
            return "body is not JSON"
        if not isinstance(batch, list) or not batch:
            return "body is not a non-empty array of CloudEvents"
        for event in batch:
            missing = [name for name in REQUIRED if not isinstance(event, dict) or not event.get(name)]
            if missing or event.get("specversion") != "1.0":
                return f"not a CloudEvent 1.0 (missing {missing})"
        return None
