"""Pending operations, one message each on the tracking queue, invisible until they are due."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields

from .logs import get_logger
from .request import DeletionRequest

logger = get_logger(__name__)

MAX_DELAY_SECONDS = 600  # a status URL is looked at again after 10 minutes at the latest


@dataclass
class Operation:
    """A deletion ARM accepted, as the tracking message carries it."""

    requestId: str
    resourceUri: str
    operationUrl: str  # the Location ARM gave on submission
    statusUrl: str  # the URL polled: Azure-AsyncOperation when given, else the latest Location
    isAsync: bool
    submittedAt: float  # epoch seconds
    checkpointId: str | None = None
    correlationId: str | None = None
    traceparent: str | None = None  # the request's, carried into its events
    pollCount: int = 0
    transientFailures: int = 0  # in a row
    failingSince: float | None = None  # epoch seconds of the first of those failures
    lastError: dict | None = None
    followInstance: bool = False  # the status URL may not be read (401/403): the VM instance is read instead
    statusReadError: dict | None = None  # the error that made the app follow the instance
    # The app's own trace context of the deletion (its submit span), whose trace every status read
    # joins; never put in events. Absent from records written before it existed, or with telemetry off.
    traceContext: str | None = None
    # The ETag of the VM's turn row when the request created it (shared/vm_turns.py): giving the turn
    # back is then one call. Absent when the request was handed the turn, or turns are off.
    turnTag: str | None = None
    # The Accepted event could not be written after this record was: the poller writes it first.
    acceptedPending: bool = False

    @classmethod
    def accepted(cls, request: DeletionRequest, location: str, async_url: str | None, now: float) -> Operation:
        return cls(
            requestId=request.request_id,
            resourceUri=request.resource_uri,
            checkpointId=request.checkpoint_id,
            correlationId=request.correlation_id,
            traceparent=request.traceparent,
            operationUrl=location,
            statusUrl=async_url or location,
            isAsync=bool(async_url),
            submittedAt=now,
        )

    def to_message(self) -> str:
        record = asdict(self)
        for name in ("traceContext", "turnTag", "acceptedPending"):
            if not record[name]:
                del record[name]  # the record is as it was before the field
        return json.dumps(record, separators=(",", ":"))

    @classmethod
    def from_message(cls, text: str) -> Operation:
        """The record in a tracking message; ValueError when it is not one."""
        try:
            data = json.loads(text)
        except RecursionError:
            raise ValueError("nested too deeply") from None
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        known = {f.name for f in fields(cls)}
        operation = cls(**{k: v for k, v in data.items() if k in known})
        texts = (operation.requestId, operation.resourceUri, operation.statusUrl)
        if not all(isinstance(t, str) for t in texts) or not isinstance(operation.submittedAt, int | float):
            raise ValueError("requestId, resourceUri, statusUrl or submittedAt is missing or of the wrong type")
        if not isinstance(operation.traceContext, str):
            operation.traceContext = None  # only telemetry reads it: a bad one starts a new trace
        operation.acceptedPending = operation.acceptedPending is True
        if not isinstance(operation.turnTag, str):
            operation.turnTag = None  # the turn is then given back the long way
        return operation

    def facts(self) -> dict:
        """The request and operation facts an event reports (the app's trace context is not one)."""
        facts = asdict(self)
        del facts["traceContext"], facts["turnTag"], facts["acceptedPending"]
        return facts


def visibility_delay(seconds: float | None, default: float, minimum: int = 0) -> int:
    """Whole seconds a message stays invisible: `seconds` (or `default`) rounded up, so that it is
    never due early, within minimum..MAX_DELAY_SECONDS."""
    chosen = default if seconds is None else seconds
    return int(min(MAX_DELAY_SECONDS, max(minimum, math.ceil(chosen - 1e-6))))


class TrackingStore:
    """The tracking queue: one message per operation ARM accepted, invisible until its status URL is
    due; a poll run leases due ones, puts running ones back with a new delay, removes ended ones."""

    def __init__(self, tracking_queue):
        self._queue = tracking_queue

    def add(self, operation: Operation, delay_seconds: int):
        """Track `operation`; returns the message sent (its id and pop receipt allow one `update`)."""
        # never expires: the queue's default time to live (7 days) would drop a long operation silently
        return self._queue.send_message(operation.to_message(), visibility_timeout=delay_seconds, time_to_live=-1)

    def receive_due(self, max_messages: int, lease_seconds: int) -> Iterator[tuple[object, Operation | None]]:
        """Up to `max_messages` due operations, each hidden from other pollers for `lease_seconds`.

        A message that is not a tracking record comes back with None as its operation.
        """
        for message in self._queue.receive_messages(
            messages_per_page=min(32, max_messages), visibility_timeout=lease_seconds, max_messages=max_messages
        ):
            try:
                yield message, Operation.from_message(message.content)
            except (ValueError, TypeError) as exc:
                logger.error(
                    "tracking message %s is not an operation record (%s): %r", message.id, exc, message.content
                )
                yield message, None

    def approximate_count(self) -> int:
        """The queue's approximate message count (operations in flight, visible or not)."""
        return self._queue.get_queue_properties().approximate_message_count

    def reschedule(self, message, operation: Operation, delay_seconds: int) -> None:
        self._queue.update_message(message, content=operation.to_message(), visibility_timeout=delay_seconds)

    def remove(self, message) -> None:
        self._queue.delete_message(message)
