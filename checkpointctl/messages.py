"""Deletion requests as the CLI sends them: read, given a requestId, wrapped, encoded, then validated by the app.

Validation is the app's own: every message is run through ``shared.request.decode_request`` exactly
as it will be sent (envelope and encoding included), so what passes here is what the app accepts.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.request import DeletionRequest, InvalidRequest, decode_request, valid_traceparent

ENVELOPES = ("plain", "eventgrid", "cloudevents")
ENCODINGS = ("plain", "base64")
# The type of the request envelopes this tool writes (the app reads only their data).
REQUEST_EVENT_TYPE = "ScVmm.CheckpointDelete.Requested"
CLOUDEVENT_SOURCE = "/checkpointctl"

# Request fields and the enqueue flags that set them.
FLAG_FOR_FIELD = {
    "resourceUri": "--resource-uri",
    "checkpointId": "--checkpoint-id",
    "requestId": "--request-id",
    "correlationId": "--correlation-id",
    "traceparent": "--traceparent",
}


@dataclass(frozen=True)
class Problem:
    """Why one request cannot be sent: where it came from, which field, what is wrong."""

    where: str  # "line 3" or "flags"
    field: str
    message: str

    def __str__(self) -> str:
        flag = FLAG_FOR_FIELD.get(self.field) if self.where == "flags" else None
        field = f"{self.field} ({flag})" if flag else self.field
        return f"{self.where}: {field}: {self.message}"


@dataclass(frozen=True)
class Prepared:
    """One validated message, ready to send."""

    where: str
    line: int | None
    request_id: str
    text: str
    request: DeletionRequest


def read_json_lines(lines: Iterable[str | bytes]) -> Iterator[tuple[int, object | Problem]]:
    """(line number, parsed JSON or Problem) for every non-blank line."""
    for number, raw in enumerate(lines, start=1):
        where = f"line {number}"
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                yield number, Problem(where, "message", "is not UTF-8 text")
                continue
        elif number == 1:
            raw = raw.removeprefix("\ufeff")
        if not raw.strip():
            continue
        try:
            yield number, json.loads(raw)
        except ValueError as exc:
            yield number, Problem(where, "message", f"is not valid JSON ({exc})")


def prepare(
    request: object,
    *,
    where: str,
    line: int | None = None,
    envelope: str = "plain",
    encoding: str = "plain",
    now: datetime | None = None,
) -> tuple[Prepared | None, Problem | None, list[str]]:
    """Give the request a requestId when it has none, wrap and encode it, and validate the result.

    Returns (prepared, None, warnings) or (None, problem, warnings).
    """
    warnings: list[str] = []
    if not isinstance(request, dict):
        return None, Problem(where, "message", "must be a JSON object (one deletion request)"), warnings
    request = dict(request)
    if request.get("requestId") is None:
        request["requestId"] = str(uuid.uuid4())
    request_id = request["requestId"]
    traceparent = request.get("traceparent")
    if traceparent is not None and not valid_traceparent(traceparent):
        warnings.append(f"{where}: traceparent {traceparent!r} is not a valid W3C traceparent; the app drops it")

    document = _wrap(request, envelope, now or datetime.now(UTC))
    # ASCII only: any character is sent as a JSON escape, so no text can be unsendable (a lone surrogate)
    # or invalid in the queue service's XML; the app's JSON parser reads the escapes back.
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=True)
    if encoding == "base64":
        text = base64.b64encode(text.encode("utf-8")).decode("ascii")

    try:
        decoded = decode_request(text, str(request_id))
    except InvalidRequest as invalid:
        return None, Problem(where, invalid.target, invalid.message), warnings
    if decoded.request_id != request_id:  # cannot happen with the envelopes written here; never send a surprise
        return None, Problem(where, "requestId", f"the app would read requestId {decoded.request_id!r}"), warnings
    return Prepared(where, line, request_id, text, decoded), None, warnings


def _wrap(request: dict, envelope: str, now: datetime) -> dict:
    if envelope == "plain":
        return request
    time = now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    resource_uri = request.get("resourceUri")
    subject = resource_uri if isinstance(resource_uri, str) else ""
    if envelope == "eventgrid":  # Event Grid event schema, as a storage-queue subscription delivers it
        return {
            "id": request["requestId"],
            "eventType": REQUEST_EVENT_TYPE,
            "subject": subject,
            "eventTime": time,
            "dataVersion": "1.0",
            "data": request,
        }
    if envelope == "cloudevents":  # CloudEvents 1.0 structured JSON
        event = {
            "specversion": "1.0",
            "type": REQUEST_EVENT_TYPE,
            "source": CLOUDEVENT_SOURCE,
            "id": request["requestId"],
            "time": time,
            "datacontenttype": "application/json",
        }
        if subject:
            event["subject"] = subject
        traceparent = valid_traceparent(request.get("traceparent"))
        if traceparent:
            event["traceparent"] = traceparent  # the distributed-tracing extension attribute
        event["data"] = request
        return event
    raise ValueError(f"unknown envelope {envelope!r}")
