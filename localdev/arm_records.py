"""What the ARM emulator records: the requests it received (and the rules they broke, and the
connections they came on), the operations it started and the status GETs each one got."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from localdev.arm_scenario import Scenario

__all__ = ["Operation", "RecordedRequest", "RequestLog", "StatusCall"]


@dataclass
class RecordedRequest:
    """One request as received (Authorization redacted: ``"Bearer ***"``)."""

    method: str
    path: str  # path without query
    query: dict[str, str]  # first value of each parameter
    headers: dict[str, str]  # as sent, Authorization redacted
    body: Any  # parsed JSON, or None (empty / not JSON)
    connection_id: int
    time: float  # time.time() when received
    raw_body: bytes = b""
    target: str = ""  # the raw request target (path + query)
    kind: str = "unknown"  # "submit" | "status" | "instance" | "unknown" | "other-host"
    token_fingerprint: str | None = None  # sha256(token)[:12], to compare tokens without keeping them
    status: int | None = None  # status answered; None if dropped / not answered yet
    dropped: bool = False
    violation: str | None = None
    operation_id: str | None = None
    chaos: str | None = None  # the chaos fault injected ("error", "throttle", "slow", "reset", "lost")
    ratelimit_remaining: int | None = None  # tokens left in its throttle bucket (throttling on)

    def header(self, name: str, default: str | None = None) -> str | None:
        """Case-insensitive header lookup."""
        low = name.lower()
        for k, v in self.headers.items():
            if k.lower() == low:
                return v
        return default

    @property
    def has_authorization(self) -> bool:
        return self.header("Authorization") is not None


@dataclass
class StatusCall:
    """One status GET an operation got."""

    kind: str  # "location" | "async"
    url: str  # path + query as requested
    status: int | None  # answered status (None = dropped)
    time: float


@dataclass
class Operation:
    """A long-running deletion started by a 202."""

    id: str
    resource_uri: str
    checkpoint_id: str | None
    protocol: str  # "location" | "async"
    created: float  # time.time()
    location_url: str  # latest Location handed out
    async_url: str | None  # Azure-AsyncOperation URL (async protocol)
    scenario: Scenario = field(repr=False)
    location_urls: list[str] = field(default_factory=list)  # every Location handed out
    polls: int = 0  # all status GETs (fault answers included)
    location_polls: int = 0
    async_polls: int = 0
    running_answers: int = 0  # "still running" answers given
    calls: list[StatusCall] = field(default_factory=list)
    completed_at: float | None = None  # when it completed (first reported done, or due by time)
    _fault_index: int = field(default=0, repr=False)
    _valid_targets: set = field(default_factory=set, repr=False)

    @property
    def done(self) -> bool:
        return self.completed_at is not None

    @property
    def due_at(self) -> float | None:
        """When it completes by time alone (``done_after_polls == 0``), polled or not; else None."""
        if self.scenario.done_after_polls:
            return None
        return self.created + self.scenario.done_after_seconds


class RequestLog:
    """The requests of the emulator's two listeners, the violations, and the connection counts;
    ``connection_id`` numbers the connections of both listeners in one sequence."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self.received: list[RecordedRequest] = []  # main listener
        self.violations: list[str] = []
        self.other_host_received: list[RecordedRequest] = []
        self.connections_opened = 0
        self.other_connections = 0
        self._conn_seq = 0

    def connected(self, other_host: bool = False) -> int:
        """Count a new connection; its connection id."""
        with self._lock:
            if other_host:
                self.other_connections += 1
            else:
                self.connections_opened += 1
            self._conn_seq += 1
            return self._conn_seq

    def add(self, rec: RecordedRequest) -> None:
        with self._lock:
            (self.other_host_received if rec.kind == "other-host" else self.received).append(rec)

    def violated(self, message: str) -> None:
        with self._lock:
            self.violations.append(message)

    def requests(self, kind: str | None = None, method: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [
                r for r in self.received if (kind is None or r.kind == kind) and (method is None or r.method == method)
            ]

    def clear(self) -> None:
        """Forget requests, violations and connection counts (the id sequence goes on)."""
        with self._lock:
            self.received.clear()
            self.violations.clear()
            self.other_host_received.clear()
            self.connections_opened = 0
            self.other_connections = 0
