"""Outcome events (contract section 4): CloudEvents 1.0 JSON, written as plain text to the events queue."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum

from . import telemetry
from .cleaning import fit_event
from .logs import get_logger

logger = get_logger(__name__)


class EventStatus(StrEnum):
    """`data.status` of an event, and the last part of its `type`."""

    ACCEPTED = "Accepted"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


EVENT_TYPE_PREFIX = "ScVmm.CheckpointDelete."
INVALID_REQUEST_SOURCE = "/checkpoint-delete/invalid-request"

# The request and operation facts an event carries, in the contract's names and order.
DATA_FIELDS = (
    "requestId",
    "correlationId",
    "resourceUri",
    "checkpointId",
    "operationUrl",
    "submittedAt",
    "completedAt",
    "pollCount",
    "verification",
    "armError",
)


def rfc3339(epoch_seconds: float) -> str:
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def outcome_event(status: EventStatus, facts: dict, now: float, error: dict | None = None) -> dict:
    """The event for `status` of the request described by `facts` (contract field names).

    `facts` may carry any of DATA_FIELDS plus `traceparent`; times are epoch seconds.
    """
    data = {}
    for name in DATA_FIELDS:
        value = facts.get(name)
        if value is None:
            continue
        data[name] = rfc3339(value) if name in ("submittedAt", "completedAt") else value
    data.setdefault("pollCount", 0)
    data["status"] = str(status)
    if error is not None:
        data["error"] = error
    event = {
        "specversion": "1.0",
        "type": EVENT_TYPE_PREFIX + status,
        "source": facts.get("resourceUri") or INVALID_REQUEST_SOURCE,
        "id": f"{facts['requestId']}:{status.lower()}",
        "time": rfc3339(now),
        "datacontenttype": "application/json",
    }
    if facts.get("checkpointId") is not None:
        event["subject"] = facts["checkpointId"]
    if facts.get("traceparent"):
        event["traceparent"] = facts["traceparent"]
    event["data"] = data
    return event


class EventWriter:
    """Writes events to the events queue (the copy that is never skipped).

    With Event Grid set, each event is also written to the outbox queue, from which the poll
    run forwards it to the topic: writing an event never waits on Event Grid.
    """

    def __init__(self, events_queue, outbox_queue=None):
        self._queue = events_queue
        self._outbox = outbox_queue

    def write(self, event: dict) -> None:
        event = fit_event(event)
        # never expires: an event waits for its consumer however long that takes (the default is 7 days)
        self._queue.send_message(json.dumps(event, separators=(",", ":"), ensure_ascii=False), time_to_live=-1)
        if self._outbox is not None:
            self._outbox.send_message(outbox_record(event, 0), time_to_live=-1)
        telemetry.current().event_written(event)
        error = event["data"].get("error") or {}
        logger.info(
            "event %s%s%s",
            event["type"],
            f" ({error.get('code')})" if error else "",
            " (verified: checkpoint absent)" if event["data"].get("verification") else "",
        )


def outbox_record(event: dict, attempts: int) -> str:
    """An outbox message: the event and how many times publishing it has failed."""
    return json.dumps({"attempts": attempts, "event": event}, separators=(",", ":"), ensure_ascii=False)
