"""The hosted contenders' queues, from the parent's side: named for the run, created, fed with
the requests, the events queue watched, and deleted afterwards.

Azurite keeps every message of every queue in one collection and scans it on each receive,
update and delete: with 4,000 messages stored those cost 35-45 ms of Azurite's CPU each, against
3-5 ms with 40 (real storage has no such cost). So that the hosted contenders measure the host
and the app rather than Azurite, the parent

- keeps ``AHEAD`` requests waiting on the requests queue (topped up as the host reports what it
  took; the host takes at most 24 at a time, so it never waits for the feed),
- deletes each event once it has read it,
- deletes the contender's queues when it is done, so that the next contender does not pay for them.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from azure.storage.queue import QueueServiceClient

from localdev.bench.plan import Item

AHEAD = 256  # requests kept waiting on the requests queue
TERMINAL = ("ScVmm.CheckpointDelete.Succeeded", "ScVmm.CheckpointDelete.Failed")


class HostedQueues:
    def __init__(self, connection_string: str, contender: str, deletions: list[Item]) -> None:
        self.tag = f"bench-{uuid.uuid4().hex[:8]}-{contender.split('-')[0]}"
        self.names = {
            "CHECKPOINT_REQUESTS_QUEUE": f"{self.tag}-requests",
            "CHECKPOINT_TRACKING_QUEUE": f"{self.tag}-tracking",
            "CHECKPOINT_EVENTS_QUEUE": f"{self.tag}-events",
        }
        self.service = QueueServiceClient.from_connection_string(connection_string)
        clients = {k: self.service.get_queue_client(v) for k, v in self.names.items()}
        for client in clients.values():
            client.create_queue()
        self.requests = clients["CHECKPOINT_REQUESTS_QUEUE"]
        self.events = clients["CHECKPOINT_EVENTS_QUEUE"]
        self.deletions = deletions
        self.enqueued = 0
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="bench-feed")
        self._stop = threading.Event()
        self._feeder: threading.Thread | None = None

    def fill(self, upto: int) -> None:
        """Enqueue the requests up to number `upto` (in order)."""
        upto = min(upto, len(self.deletions))
        batch = self.deletions[self.enqueued : upto]
        list(self._pool.map(lambda item: self.requests.send_message(item.message()), batch))
        self.enqueued = max(self.enqueued, upto)

    def start_feeding(self, handled: Callable[[], int]) -> None:
        """Top the requests queue up to AHEAD waiting, by what the host says it has taken."""
        self.fill(AHEAD)

        def feed() -> None:
            while not self._stop.is_set() and self.enqueued < len(self.deletions):
                if handled() + AHEAD > self.enqueued:
                    self.fill(handled() + AHEAD)
                else:
                    self._stop.wait(0.02)

        self._feeder = threading.Thread(target=feed, name="bench-feeder", daemon=True)
        self._feeder.start()

    def watch(self, deadline: float) -> tuple[dict, float, bool]:
        """Read (and delete) events until every request has its terminal event. Returns the
        outcome counts, the time written in the last terminal event, and whether time ran out."""
        wanted = {item.request_id for item in self.deletions}
        terminal: dict[str, tuple[str, float]] = {}
        while len(terminal) < len(wanted) and time.monotonic() < deadline:
            page = list(next(self.events.receive_messages(messages_per_page=32, visibility_timeout=600).by_page(), []))
            for message in page:
                event = json.loads(message.content)
                request_id = (event.get("data") or {}).get("requestId")
                if event.get("type") in TERMINAL and request_id in wanted and request_id not in terminal:
                    stamp = datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
                    terminal[request_id] = (event["type"].rsplit(".", 1)[1].lower(), stamp)
            list(self._pool.map(self.events.delete_message, page))
            if not page:
                time.sleep(0.1)
        counts = {"succeeded": 0, "failed": 0}
        for status, _ in terminal.values():
            counts[status] = counts.get(status, 0) + 1
        ended = max((stamp for _, stamp in terminal.values()), default=time.time())
        return counts, ended, len(terminal) < len(wanted)

    def close(self) -> None:
        """Stop feeding and delete every queue of the run (the app's and the host's too)."""
        self._stop.set()
        if self._feeder is not None:
            self._feeder.join(timeout=30)
        self._pool.shutdown()
        for queue in self.service.list_queues(name_starts_with=self.tag):
            self.service.delete_queue(queue.name)
