"""Outcome events (contract section 4): CloudEvents 1.0 JSON, written as plain text to the events queue."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from .logs import get_logger

logger = get_logger(__name__)

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
)


def rfc3339(epoch_seconds: float) -> str:
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def outcome_event(status: str, facts: dict, now: float, error: dict | None = None) -> dict:
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
    data["status"] = status
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
    """Writes events to the events queue (the copy that is never skipped), then to Event Grid if set."""

    def __init__(self, events_queue, forwarder=None):
        self._queue = events_queue
        self._forwarder = forwarder  # an EventGridForwarder, or None

    def write(self, event: dict) -> None:
        # never expires: an event waits for its consumer however long that takes (the default is 7 days)
        self._queue.send_message(json.dumps(event, separators=(",", ":"), ensure_ascii=False), time_to_live=-1)
        if self._forwarder is not None:
            self._forwarder.publish(event)
        error = event["data"].get("error") or {}
        logger.info(
            "event %s%s",
            event["type"],
            f" ({error.get('code')})" if error else "",
        )
