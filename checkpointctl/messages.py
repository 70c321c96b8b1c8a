"""Deletion requests as the CLI sends them: read, given a requestId, wrapped, encoded, then validated by the app.

Validation is the app's own: every message is run through ``shared.request.decode_request`` exactly
as it will be sent (envelope and encoding included), so what passes here is what the app accepts. A
retention policy request (docs/policies.md) is checked in two parts: its `policy` and `dryRun` with
``shared.policy.parse_policy``, everything else with ``decode_request`` on the same message without them,
so the check is the same whether or not the app's ``decode_request`` reads policies itself (before the
app ran policies, it refused every request that carried one).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.policy import Policy, PolicyInvalid, parse_policy
from shared.request import (
    MAX_MESSAGE_BYTES,
    DeletionRequest,
    InvalidRequest,
    decode_request,
    object_with_repeats,
    valid_traceparent,
)

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
# Policy request members and the enqueue flags that set them (the rest of a policy request: FLAG_FOR_FIELD).
POLICY_FLAG_FOR_FIELD = {
    "policy.keepLatest": "--keep-latest",
    "policy.namePattern": "--name-pattern",
    "dryRun": "--dry-run",
}
POLICY_MEMBERS = ("policy", "dryRun")  # beside the fields every request has
# Members the app reads from a request object; given twice in one line, they make it ambiguous: the app
# refuses such a request, except for a traceparent, which it drops.
_READ_ONCE = tuple(name for name in (*FLAG_FOR_FIELD, *POLICY_MEMBERS) if name != "traceparent")


@dataclass(frozen=True)
class Problem:
    """Why one request cannot be sent: where it came from, which field, what is wrong."""

    where: str  # "line 3" or "flags"
    field: str
    message: str

    def __str__(self) -> str:
        flag = (FLAG_FOR_FIELD | POLICY_FLAG_FOR_FIELD).get(self.field) if self.where == "flags" else None
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
    policy: Policy | None = None  # a retention policy request: its policy (and dryRun)


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
            yield number, json.loads(raw, object_pairs_hook=object_with_repeats)
        except ValueError as exc:
            yield number, Problem(where, "message", f"is not valid JSON ({exc})")


def is_policy_request(request: dict) -> bool:
    """A request with a `policy`, or a `dryRun` other than false: checked as a retention policy request."""
    dry_run = request.get("dryRun")
    return request.get("policy") is not None or (dry_run is not None and dry_run is not False)


def prepare(
    request: object,
    *,
    where: str,
    line: int | None = None,
    envelope: str = "plain",
    encoding: str = "plain",
    now: datetime | None = None,
) -> tuple[Prepared | None, Problem | None, list[str]]:
    """Give the request a requestId when it has none, wrap and encode it, and validate the result (a policy
    request as the module's docstring says; `Prepared.policy` is then its policy).

    Returns (prepared, None, warnings) or (None, problem, warnings).
    """
    warnings: list[str] = []
    if not isinstance(request, dict):
        return None, Problem(where, "message", "must be a JSON object (one deletion request)"), warnings
    if repeated := [name for name in _READ_ONCE if name in getattr(request, "names", ())]:
        # json keeps the last of them; the app refuses the message, so the CLI never sends a guess
        return None, Problem(where, repeated[0], f"the request has more than one member named {repeated[0]}"), warnings
    original, request = request, dict(request)
    if "traceparent" in getattr(original, "names", ()):
        warnings.append(f"{where}: traceparent is given more than once; the app would drop it, so it is not sent")
        del request["traceparent"]
    if request.get("requestId") is None:
        request["requestId"] = str(uuid.uuid4())
    request_id = request["requestId"]
    traceparent = request.get("traceparent")
    if traceparent is not None and not valid_traceparent(traceparent):
        warnings.append(f"{where}: traceparent {traceparent!r} is not a valid W3C traceparent; the app drops it")

    now = now or datetime.now(UTC)
    text = _encode(_wrap(request, envelope, now), encoding)
    policy, problems = None, []
    if is_policy_request(request):
        shared_fields = {name: value for name, value in request.items() if name not in POLICY_MEMBERS}
        checked = _encode(_wrap(shared_fields, envelope, now), encoding)
        if len(text.encode("utf-8")) > MAX_MESSAGE_BYTES:
            problems.append(("message", f"message is {len(text)} bytes; at most {MAX_MESSAGE_BYTES} are accepted"))
    else:
        checked = text
    try:
        decoded = decode_request(checked, str(request_id))
    except InvalidRequest as invalid:
        decoded = None
        problems.append((invalid.target, invalid.message))
    try:
        policy = parse_policy(original)
    except PolicyInvalid as invalid:
        problems.append((invalid.target, invalid.message))
    if problems:  # every problem named, the first one's field as the target (as the app's error says)
        return None, Problem(where, problems[0][0], "; ".join(message for _, message in problems)), warnings
    if decoded.request_id != request_id:  # cannot happen with the envelopes written here; never send a surprise
        return None, Problem(where, "requestId", f"the app would read requestId {decoded.request_id!r}"), warnings
    return Prepared(where, line, request_id, text, decoded, policy), None, warnings


def _encode(document: dict, encoding: str) -> str:
    # ASCII only: any character is sent as a JSON escape, so no text can be unsendable (a lone surrogate)
    # or invalid in the queue service's XML; the app's JSON parser reads the escapes back.
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=True)
    if encoding == "base64":
        text = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return text


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
