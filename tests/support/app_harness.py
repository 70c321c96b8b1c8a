"""The function app on the stand-ins, driven as the Functions host drives it (the `app` and
`make_app` fixtures of tests/conftest.py build it), and the names its tests share."""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueServiceClient

from tests.support.schemas import SCHEMA_DOCS, schema_validator

SUBMIT = "submit_checkpoint_deletion"
POLL = "poll_checkpoint_operations"
POISON = "report_poisoned_requests"
TERMINAL = ("ScVmm.CheckpointDelete.Succeeded", "ScVmm.CheckpointDelete.Failed")

EVENT_SCHEMA = schema_validator(SCHEMA_DOCS["event.schema.json"])
POLICY_EVENT_SCHEMA = schema_validator(SCHEMA_DOCS["policy-event.schema.json"])
POLICY_EVENT_PREFIX = "ScVmm.CheckpointPolicy."


def new_resource_uri(name: str | None = None) -> str:
    sub = uuid.uuid4()
    return f"/subscriptions/{sub}/resourceGroups/rg-test/providers/Microsoft.HybridCompute/machines/{name or 'vm1'}"


class AppHarness:
    """The function app on the stand-ins, driven as the Functions host drives it."""

    def __init__(self, host, settings, services, connection_string: str):
        self.host = host
        self.settings = settings
        self.services = services
        service = QueueServiceClient.from_connection_string(connection_string)
        self.requests_queue = service.get_queue_client(settings.requests_queue)
        self.tracking_queue = service.get_queue_client(settings.tracking_queue)
        self.events_queue = service.get_queue_client(settings.events_queue)
        self.poison_queue = service.get_queue_client(settings.poison_queue)
        with contextlib.suppress(ResourceExistsError):  # the app made it: it sends requests whose turn came
            self.requests_queue.create_queue()
        self._events: list[dict] = []

    def send(self, request, encoding: str = "plain") -> str:
        """Put a request (a dict, or raw text) on the requests queue as a producer would."""
        text = request if isinstance(request, str) else json.dumps(request)
        if encoding == "base64":
            text = base64.b64encode(text.encode()).decode()
        return self.requests_queue.send_message(text).id

    def deliver(self) -> int:
        """One delivery round of the requests queue and of its poison queue."""
        handled = self.host.deliver_once(SUBMIT)
        return handled + self.host.deliver_once(POISON)

    def poll(self) -> None:
        self.host.fire(POLL)

    def events(self) -> list[dict]:
        """Every event written so far (the events queue is drained into this list)."""
        while True:
            batch = list(self.events_queue.receive_messages(messages_per_page=32, max_messages=32))
            if not batch:
                return list(self._events)
            for message in batch:
                event = json.loads(message.content)
                policy = str(event.get("type", "")).startswith(POLICY_EVENT_PREFIX)
                schema = POLICY_EVENT_SCHEMA if policy else EVENT_SCHEMA
                errors = [e.message for e in schema.iter_errors(event)]
                assert not errors, f"an event the app wrote does not match its schema in schemas/: {errors}"
                self._events.append(event)
                self.events_queue.delete_message(message)

    def events_of(self, request_id: str) -> list[dict]:
        return [e for e in self.events() if e["data"].get("requestId") == request_id]

    def run(self, request_ids, timeout: float = 20.0) -> dict[str, list[dict]]:
        """Deliver and poll until every request has its terminal event; returns the events of each."""
        deadline = time.monotonic() + timeout
        while True:
            self.deliver()
            self.poll()
            by_request = {rid: self.events_of(rid) for rid in request_ids}
            if all(any(e["type"] in TERMINAL for e in events) for events in by_request.values()):
                return by_request
            if time.monotonic() > deadline:
                raise AssertionError(f"requests did not finish in {timeout} s: {by_request}")
            time.sleep(0.2)

    def count(self, queue) -> int:
        """Visible messages on `queue` (0 when the queue does not exist)."""
        try:
            return len(queue.peek_messages(max_messages=32))
        except ResourceNotFoundError:
            return 0
