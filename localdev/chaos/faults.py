"""The faults a chaos run injects besides ARM's own chaos, on a timeline from the run's start:

- the host process is killed (SIGKILL) every ``kill_every`` seconds and started again at once;
- the identity endpoint answers garbage for ``identity_garbage`` seconds (a third each of an HTML
  502, a token with ``expires_on: "soon"``, a text/plain 200), and later hangs for
  ``identity_hang`` seconds;
- the Event Grid topic is down for ``eventgrid_down`` seconds (a third each hanging, refusing
  connections, answering 503);
- Azurite is stopped (it saves its queues and tables, as a durable store keeps what it
  acknowledged), stays down for ``azurite_down`` seconds and starts again on the same ports and
  folder, once the run has put
  every request on the queue.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from localdev.azurite import Azurite
from localdev.chaos.app_process import AppProcess
from localdev.chaos.observe import Gate
from localdev.eventgrid_endpoint import DOWN_MODES, EventGridEndpoint
from localdev.identity_endpoint import GARBAGE_KINDS, IdentityEndpoint


@dataclass(frozen=True)
class FaultTimes:
    """Durations (seconds) and when each one-off fault begins (seconds after the start)."""

    kill_every: float = 20.0
    identity_garbage: float = 10.0
    identity_garbage_at: float = 12.0
    identity_hang: float = 30.0
    identity_hang_at: float = 35.0
    eventgrid_down: float = 60.0
    eventgrid_down_at: float = 25.0
    azurite_down: float = 5.0
    azurite_restart_at: float = 50.0


@dataclass
class FaultLog:
    host_kills: int = 0
    azurite_restarts: int = 0
    azurite_down_seconds: float = 0.0
    identity_garbage_seconds: float = 0.0
    identity_hang_seconds: float = 0.0
    eventgrid_down_seconds: float = 0.0
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (seconds after start, what)
    problems: list[str] = field(default_factory=list)  # faults that could not be injected as planned


class FaultInjector:
    """Runs the timeline in a thread of its own until :meth:`stop`."""

    def __init__(
        self,
        times: FaultTimes,
        app: AppProcess,
        azurite: Azurite,
        identity: IdentityEndpoint,
        topic: EventGridEndpoint,
        storage_gate: Gate,
        enqueued: threading.Event,
    ) -> None:
        self.times = times
        self.log = FaultLog()
        self._app = app
        self._azurite = azurite
        self._identity = identity
        self._topic = topic
        self._gate = storage_gate
        self._enqueued = enqueued
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self.one_offs_done = threading.Event()  # every fault but the kills has been injected

    def start(self) -> FaultInjector:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="chaos-faults", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def _note(self, what: str) -> None:
        self.log.timeline.append((round(self.elapsed(), 1), what))

    def _one_offs(self) -> list[tuple[float, Callable[[], None]]]:
        t = self.times
        steps: list[tuple[float, Callable[[], None]]] = []
        if t.identity_garbage > 0:
            third = t.identity_garbage / 3
            for i, kind in enumerate(GARBAGE_KINDS):
                steps.append((t.identity_garbage_at + i * third, self._garbage(kind, third)))
        if t.identity_hang > 0:
            steps.append((t.identity_hang_at, self._hang))
        if t.eventgrid_down > 0:
            third = t.eventgrid_down / 3
            for i, mode in enumerate(DOWN_MODES):
                steps.append((t.eventgrid_down_at + i * third, self._topic_down(mode, third)))
        return sorted(steps, key=lambda step: step[0])

    def _run(self) -> None:
        steps = self._one_offs()
        next_kill = self.times.kill_every if self.times.kill_every > 0 else float("inf")
        azurite_pending = self.times.azurite_restart_at >= 0
        while not self._stop.is_set():
            now = self.elapsed()
            if now >= next_kill:
                self._app.restart()
                self.log.host_kills += 1
                self._note(f"host process killed (SIGKILL) and started again, pid {self._app.pid}")
                next_kill += self.times.kill_every
            while steps and steps[0][0] <= now and not self._stop.is_set():
                steps.pop(0)[1]()
            # Not before every request is on the queue: a write of the run's own that Azurite
            # dropped would look like a request the app lost.
            if azurite_pending and now >= self.times.azurite_restart_at and self._enqueued.is_set():
                self._restart_azurite()
                azurite_pending = False
            if not steps and not azurite_pending:
                self.one_offs_done.set()
            self._stop.wait(0.1)

    def _garbage(self, kind: str, seconds: float) -> Callable[[], None]:
        def inject() -> None:
            self._identity.garbage_for(seconds, kind)
            self.log.identity_garbage_seconds += seconds
            self._note(f"identity endpoint answers garbage ({kind}) for {seconds:.1f} s")

        return inject

    def _hang(self) -> None:
        self._identity.hang_for(self.times.identity_hang)
        self.log.identity_hang_seconds += self.times.identity_hang
        self._note(f"identity endpoint hangs for {self.times.identity_hang:.0f} s")

    def _topic_down(self, mode: str, seconds: float) -> Callable[[], None]:
        def inject() -> None:
            self._topic.down_for(seconds, mode)
            self.log.eventgrid_down_seconds += seconds
            self._note(f"Event Grid topic down ({mode}) for {seconds:.1f} s")

        return inject

    def _restart_azurite(self) -> None:
        port, table_port = self._azurite.port, self._azurite.table_port
        self._gate.close()
        try:
            # Stopped, not killed: Azurite then saves its queue and table databases, as a durable
            # store keeps what it acknowledged (a SIGKILL loses up to 5 s of table writes, which no
            # Azure storage account does).
            self._azurite.stop()
            self._note("Azurite stopped")
            self._stop.wait(self.times.azurite_down)
            self._azurite.start(port=port, table_port=table_port)
        finally:
            self._gate.open()
        self.log.azurite_restarts += 1
        self.log.azurite_down_seconds += self.times.azurite_down
        self._note(f"Azurite started again on port {self._azurite.port} (pid {self._azurite.pid})")
        if self._azurite.port != port:
            self.log.problems.append(
                f"Azurite came back on port {self._azurite.port}, not {port}: the app lost its storage"
            )
