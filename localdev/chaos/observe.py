"""The run's own storage traffic: putting the requests on the queue, and reading every event off
the events queue as the app writes them (each kept with the moment it was read).

Both keep going through storage trouble (they retry until they get through) and can be paused
while the run restarts Azurite itself.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import threading
import time
from dataclasses import dataclass

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from localdev.chaos.plan import PlannedRequest

TERMINAL_TYPES = {"ScVmm.CheckpointDelete.Succeeded": "Succeeded", "ScVmm.CheckpointDelete.Failed": "Failed"}


def queue(connection_string: str, name: str) -> QueueClient:
    """A client whose calls fail fast (the run retries them itself)."""
    return QueueClient.from_connection_string(
        connection_string, name, connection_timeout=3, read_timeout=10, retry_total=0
    )


def create_queues(connection_string: str, names: list[str]) -> None:
    """The app's queues, as a deployment creates them."""
    for name in names:
        with contextlib.suppress(ResourceExistsError):
            queue(connection_string, name).create_queue()


class Gate:
    """Open unless the run is restarting storage; storage calls of the run wait at it."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()

    def close(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def wait(self) -> None:
        self._open.wait()


def enqueue_all(
    client: QueueClient,
    requests: list[PlannedRequest],
    gate: Gate,
    stop: threading.Event,
    spread_over: float = 0.0,
    workers: int = 8,
) -> None:
    """Send every request until the queue took it (a send that failed is sent again), spread
    evenly over ``spread_over`` seconds (0: as fast as the queue takes them)."""
    started = time.monotonic()
    spacing = spread_over / len(requests) if requests else 0.0

    def send(numbered: tuple[int, PlannedRequest]) -> None:
        index, request = numbered
        if stop.wait(max(0.0, started + index * spacing - time.monotonic())):
            return
        while not stop.is_set():
            gate.wait()
            try:
                client.send_message(request.message())
                request.enqueued_at = time.time()
                return
            except AzureError:
                time.sleep(0.5)

    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="chaos-enqueue") as pool:
        list(pool.map(send, enumerate(requests)))


@dataclass
class SeenEvent:
    event: dict
    read_at: float  # time.time()

    @property
    def request_id(self) -> str | None:
        data = self.event.get("data")
        return data.get("requestId") if isinstance(data, dict) else None

    @property
    def outcome(self) -> str | None:
        """ "Succeeded" / "Failed" for a terminal event, else None."""
        return TERMINAL_TYPES.get(self.event.get("type"))


class EventCollector:
    """Reads the events queue in a thread of its own, deleting what it read."""

    def __init__(self, client: QueueClient, gate: Gate) -> None:
        self._client = client
        self._gate = gate
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.events: list[SeenEvent] = []
        self.unreadable: list[str] = []  # message texts that are not a JSON object
        self.terminal_ids: set[str] = set()  # request ids with a terminal event
        self.read_errors = 0

    def start(self) -> EventCollector:
        self._thread = threading.Thread(target=self._run, name="chaos-events", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def terminal_count(self, request_ids: set[str]) -> int:
        with self._lock:
            return len(self.terminal_ids & request_ids)

    def drain(self, quiet_rounds: int = 3, limit: float = 120.0) -> None:
        """Read until the queue has answered empty ``quiet_rounds`` times in a row."""
        deadline = time.monotonic() + limit
        empty = 0
        while empty < quiet_rounds and time.monotonic() < deadline:
            empty = empty + 1 if self._read_batch() == 0 else 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self._gate.wait()
            if self._read_batch() == 0:
                self._stop.wait(0.3)

    def _read_batch(self) -> int:
        try:
            messages = list(self._client.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=60))
        except (AzureError, ResourceNotFoundError):
            self.read_errors += 1
            time.sleep(0.5)
            return -1
        now = time.time()
        for message in messages:
            self._keep(message.content, now)
            try:
                self._client.delete_message(message)
            except AzureError:
                self.read_errors += 1  # it comes back after its visibility timeout: read again
        return len(messages)

    def _keep(self, text: str, now: float) -> None:
        try:
            event = json.loads(text)
        except ValueError:
            event = None
        with self._lock:
            if not isinstance(event, dict):
                self.unreadable.append(text[:500])
                return
            seen = SeenEvent(event, now)
            self.events.append(seen)
            if seen.outcome and seen.request_id:
                self.terminal_ids.add(seen.request_id)


def take_all(client: QueueClient) -> list[str]:
    """Every message left on a queue (read and deleted: call it at the end of the run)."""
    texts: list[str] = []
    for _ in range(1000):
        try:
            batch = list(client.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=300))
        except ResourceNotFoundError:
            return texts
        except AzureError:
            time.sleep(0.5)
            continue
        if not batch:
            return texts
        texts.extend(m.content for m in batch)
    return texts


def approximate_count(client: QueueClient) -> int | None:
    try:
        return client.get_queue_properties().approximate_message_count
    except ResourceNotFoundError:
        return 0
    except AzureError:
        return None
