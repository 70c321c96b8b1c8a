"""The contract's documents as the contract tests read them: the deletion request and event schemas,
the examples, the events the app builds for a message, and what a valid request message is."""

from __future__ import annotations

import base64
import json

from jsonschema import Draft202012Validator

from shared.arm_answers import arm_error
from shared.errors import app_error, retries_exhausted
from shared.events import outcome_event
from shared.request import InvalidRequest, decode_request
from shared.tracking import Operation
from tests.support.paths import EXAMPLES
from tests.support.schemas import SCHEMA_DOCS, schema_validator

REQUEST_SCHEMA = SCHEMA_DOCS["deletion-request.schema.json"]
EVENT_SCHEMA = SCHEMA_DOCS["event.schema.json"]
validator = schema_validator


def ref(uri: str) -> Draft202012Validator:
    return validator({"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": uri})


REQUEST = validator(REQUEST_SCHEMA)
EVENT = validator(EVENT_SCHEMA)
EVENT_GRID_ENVELOPE = ref(REQUEST_SCHEMA["$id"] + "#/$defs/eventGridEnvelope")
CLOUD_EVENTS_ENVELOPE = ref(REQUEST_SCHEMA["$id"] + "#/$defs/cloudEventsEnvelope")
EVENT_OF_STATUS = {s: ref(EVENT_SCHEMA["$id"] + "#" + s.lower()) for s in ("Accepted", "Succeeded", "Failed")}

TYPE_PREFIX = "ScVmm.CheckpointDelete."
INVALID_SOURCE = "/checkpoint-delete/invalid-request"
SUB = "00000000-0000-0000-0000-000000000001"
SUBS = "/subscriptions/" + SUB
URI = SUBS + "/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/vm1"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TEXT_FIELDS = ("checkpointId", "requestId", "correlationId")


def load(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


LOCATION = "https://management.azure.com/providers/Microsoft.ScVmm/locations/eastus/operationResults/op-1?api-version=2024-06-01"
ARM_FAILURE = arm_error(
    {
        "error": {
            "code": "OperationFailed.Checkpoint",
            "message": "The checkpoint could not be removed.",
            "target": "checkpointId",
            "details": [
                {"code": "VmmJobFailed", "message": "Job failed", "target": None, "details": [], "additionalInfo": []}
            ],
            "additionalInfo": [{"type": "PolicyViolation", "info": {"policy": "p1"}}],
        }
    }
)
ERRORS = {
    "ARM's error with details": ARM_FAILURE,
    "ARM's error, code only": arm_error({"error": {"code": "AuthorizationFailed", "message": "Not authorized."}}),
    "ARM's error, message only": arm_error({"error": {"message": "Bad request, and no code."}}),
    "OperationTimedOut": app_error("OperationTimedOut", "the operation was still running 86400 s after submission"),
    "RetriesExhausted": retries_exhausted(app_error("HttpError", "ARM answered HTTP 503"), "8 status reads in a row"),
    "UntrustedOperationUrl": app_error("UntrustedOperationUrl", "status URL is outside ARM_ENDPOINT: https://x/op"),
    "OperationFailed": app_error("OperationFailed", "ARM answered HTTP 404 with no error body"),
    "OperationCanceled": app_error("OperationCanceled", "the operation ended with status Canceled"),
}


def events_for(body: str, error: dict) -> list[dict]:
    """The events the app builds for a message: for a valid request, Accepted, then Succeeded or Failed
    (with `error`) after polls, and the Succeeded or Failed of a deletion ARM finished or refused at
    once; for an invalid one, its Failed/InvalidRequest."""
    now = 1_790_000_000.0
    try:
        request = decode_request(body, "msg-1")
    except InvalidRequest as invalid:
        return [
            outcome_event("Failed", invalid.fields, now, app_error("InvalidRequest", invalid.message, invalid.target))
        ]
    tracked = Operation.accepted(request, LOCATION, None, now - 60).facts()
    at_once = {k: v for k, v in tracked.items() if k not in ("operationUrl", "submittedAt")}
    return [
        outcome_event("Accepted", tracked, now - 60),
        outcome_event("Succeeded", {**tracked, "completedAt": now, "pollCount": 3}, now),
        outcome_event("Failed", {**tracked, "completedAt": now, "pollCount": 1}, now, error),
        outcome_event("Succeeded", {**at_once, "submittedAt": now, "completedAt": now}, now),
        outcome_event("Failed", {**at_once, "completedAt": now}, now, error),
    ]


def assert_valid_event(event: dict) -> None:
    errors = [e.message for e in EVENT.iter_errors(event)]
    assert not errors, (errors, event)
    status = event["data"]["status"]
    assert EVENT_OF_STATUS[status].is_valid(event)
    for other in set(EVENT_OF_STATUS) - {status}:
        assert not EVENT_OF_STATUS[other].is_valid(event)
    # What the schema cannot say:
    assert event["type"] == TYPE_PREFIX + status
    assert event["id"] == f"{event['data']['requestId']}:{status.lower()}"
    assert event["source"] == event["data"].get("resourceUri", INVALID_SOURCE)
    assert event.get("subject") == event["data"].get("checkpointId")


def assert_valid_request_message(text: str, message_id: str = "msg-example"):
    """A message text as the app gets it: decodes, and the request object in it validates."""
    request = decode_request(text, message_id)
    try:
        document = json.loads(text)
    except ValueError:
        document = json.loads(base64.b64decode(text))
    if "specversion" in document:
        assert CLOUD_EVENTS_ENVELOPE.is_valid(document), list(CLOUD_EVENTS_ENVELOPE.iter_errors(document))
        data = document.get("data") or json.loads(base64.b64decode(document["data_base64"]))
    elif "eventType" in document:
        assert EVENT_GRID_ENVELOPE.is_valid(document), list(EVENT_GRID_ENVELOPE.iter_errors(document))
        data = document["data"]
    else:
        data = document
    assert REQUEST.is_valid(data), list(REQUEST.iter_errors(data))
    return request, document
