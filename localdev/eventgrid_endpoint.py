"""A local stand-in for an Event Grid custom topic's publish endpoint, over HTTPS on 127.0.0.1.

It takes what `azure.eventgrid.EventGridPublisherClient` sends for CloudEvents
(`POST /api/events?api-version=2018-01-01`, `Content-Type: application/cloudevents-batch+json`,
a JSON array of CloudEvents 1.0) and checks the bearer token's audience with the identity
endpoint that issued it.

Faults: `outage = True` answers 503 until set back; `down_for(seconds, mode)` makes the topic
unreachable for a while (`"hang"`: each publish is held without an answer until the window ends,
then its connection is closed; `"refuse"`: connections are closed at once; `"503"`: 503 answers);
`reject_ids(ids)` answers 400 naming the id to any batch that holds one of those event ids (Event
Grid refuses a whole batch for one bad event). `clear()` ends windows and rejections.

    with EventGridEndpoint(ca, identity) as topic:
        topic.endpoint          # https://127.0.0.1:PORT/api/events
        topic.events            # every CloudEvent it accepted, in order
        topic.faults_served     # publishes met by a fault, by kind: {"hang": 3, "503": 2, ...}
"""

from __future__ import annotations

import json
import ssl
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from localdev.servers import LoopbackHandler, LoopbackServer, LoopbackService

AUDIENCE = "https://eventgrid.azure.net"
REQUIRED = ("specversion", "id", "source", "type")
DOWN_MODES = ("hang", "refuse", "503")


class _Handler(LoopbackHandler):
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        topic = self.server.topic
        mode = topic._down_mode()
        if mode == "refuse":
            topic._count("refuse")
            self.hang_up()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if mode == "hang":
            topic._count("hang")
            topic._wait_window()
            self.hang_up()
            return
        status, problem = topic._check(self.path, dict(self.headers), body, mode == "503")
        code = "ServiceUnavailable" if status == 503 else "BadRequest"
        payload = b"" if status == 200 else json.dumps({"error": {"code": code, "message": problem}}).encode()
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

    def verify_request(self, request, client_address) -> bool:
        # "refuse": a new connection is closed as soon as it is accepted (before TLS).
        if self.topic._down_mode() == "refuse":
            self.topic._count("refuse")
            return False
        return True


class EventGridEndpoint(LoopbackService):
    def __init__(self, ca, identity, host: str = "127.0.0.1"):
        super().__init__(host)
        self._ca = ca
        self._identity = identity
        self._lock = threading.Lock()
        self._window = threading.Condition(self._lock)
        self.events: list[dict] = []  # accepted CloudEvents
        self.batches = 0  # accepted POSTs
        self.rejected: list[str] = []  # why each refused POST was refused (outages excluded)
        self.refused_during_outage = 0  # 503 answers of `outage` or a "503" window
        self.outage = False
        self._down_until = 0.0  # time.monotonic() until which the topic is down
        self._down = "hang"
        self._reject: set[str] = set()
        self._faults: Counter = Counter()
        self._tmp = tempfile.TemporaryDirectory(prefix="eventgrid-")

    # -- lifecycle (start, stop: LoopbackService) -----------------------------------------------
    def _listen(self) -> list[LoopbackServer]:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert(self._host, "localhost").configure_cert(context)
        server = _Server(self._host, _Handler, "eventgrid-endpoint", ssl_context=context)
        server.topic = self
        return [server]

    def _ending(self) -> None:
        self._end_windows()

    def _ended(self) -> None:
        self._tmp.cleanup()

    @property
    def endpoint(self) -> str:
        return f"https://{self._host}:{self._listener().port}/api/events"

    @property
    def ca_bundle_path(self) -> str:
        path = Path(self._tmp.name) / "ca.pem"
        if not path.exists():
            self._ca.cert_pem.write_to_path(str(path))
        return str(path)

    @property
    def faults_served(self) -> dict[str, int]:
        """Publishes (or connections, for "refuse") met by a fault, by kind: "hang", "refuse",
        "503" (including `outage`) and "rejected" (batches refused by `reject_ids`)."""
        with self._lock:
            return dict(self._faults)

    def down_for(self, seconds: float, mode: str = "hang") -> None:
        """Make the topic unreachable for the next `seconds`: `"hang"` holds each publish without
        an answer until the window ends and then closes its connection; `"refuse"` closes each
        connection at once; `"503"` answers 503 ServiceUnavailable."""
        if mode not in DOWN_MODES:
            raise ValueError(f"mode must be one of {DOWN_MODES}, got {mode!r}")
        with self._window:
            self._down_until = time.monotonic() + max(0.0, float(seconds))
            self._down = mode
            self._window.notify_all()

    def reject_ids(self, ids) -> None:
        """Answer 400, naming the id, to every batch that holds an event with one of these ids."""
        with self._lock:
            self._reject.update(ids)

    def clear(self) -> None:
        """Forget what was received and counted, end any `down_for` window, `outage` and rejections."""
        with self._lock:
            self.events.clear()
            self.rejected.clear()
            self.batches = 0
            self.refused_during_outage = 0
            self.outage = False
            self._reject.clear()
            self._faults.clear()
        self._end_windows()

    # -- internals ----------------------------------------------------------------------------
    def _end_windows(self) -> None:
        with self._window:
            self._down_until = 0.0
            self._window.notify_all()

    def _down_mode(self) -> str | None:
        with self._lock:
            return self._down if time.monotonic() < self._down_until else None

    def _count(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    def _wait_window(self) -> None:
        with self._window:
            self._hold(self._window, lambda: self._down_until)

    def _check(self, path: str, headers: dict, body: bytes, down: bool = False) -> tuple[int, str]:
        with self._lock:
            if self.outage or down:
                self.refused_during_outage += 1
                self._faults["503"] += 1
                return 503, "outage"
            problem = self._problem(path, {k.lower(): v for k, v in headers.items()}, body)
            if problem:
                self.rejected.append(problem)
                return (401 if "token" in problem else 400), problem
            batch = json.loads(body)
            bad = next((e["id"] for e in batch if e["id"] in self._reject), None)
            if bad is not None:
                self._faults["rejected"] += 1
                problem = f"event {bad!r} is invalid: the whole batch of {len(batch)} event(s) was refused"
                self.rejected.append(problem)
                return 400, problem
            self.events.extend(batch)
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
