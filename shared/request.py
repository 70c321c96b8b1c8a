"""Deletion requests: decoding a queue message (plain, base64, Event Grid, CloudEvents) and validating it."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field

from .logs import get_logger

logger = get_logger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024
MAX_RESOURCE_URI = 1024
MAX_TEXT_FIELD = 256

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
# also lone surrogates and the noncharacters U+FFFE/U+FFFF, which a queue message cannot carry
_FORBIDDEN_IN_URI = re.compile(r"[?#%\\\s\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class DeletionRequest:
    resource_uri: str
    request_id: str
    checkpoint_id: str | None = None
    correlation_id: str | None = None
    traceparent: str | None = None


@dataclass
class InvalidRequest(Exception):
    """A message that is not a valid deletion request.

    `fields` holds what could still be read from it (valid values only), so the
    `Failed` event can name the request, its resource and its correlation id.
    """

    message: str
    target: str
    fields: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


def decode_request(body: bytes | str, message_id: str) -> DeletionRequest:
    """Turn a queue message into a validated DeletionRequest, or raise InvalidRequest."""
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    fallback = {"requestId": message_id}
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidRequest(
            f"message is {len(raw)} bytes; at most {MAX_MESSAGE_BYTES} are accepted", "message", fallback
        )
    document = _parse_json_or_base64_json(raw, "message", fallback)
    request, envelope_id, envelope_traceparent = _unwrap(document, fallback)
    return _validate(request, envelope_id or message_id, envelope_traceparent)


def _parse_json_or_base64_json(raw: bytes, target: str, fallback: dict):
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidRequest(f"{target} is not UTF-8 text", target, fallback) from None
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        decoded = base64.b64decode("".join(text.split()), validate=True)
        return json.loads(decoded.decode("utf-8-sig"))
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{target} is not valid JSON, nor base64 of JSON", target, fallback) from None


def _unwrap(document, fallback: dict) -> tuple[dict, str | None, str | None]:
    """Return (request object, envelope id, envelope traceparent) for each accepted envelope."""
    if isinstance(document, list) and len(document) == 1:
        document = document[0]  # an Event Grid or CloudEvents batch of one
    if not isinstance(document, dict):
        raise InvalidRequest("message must be a JSON object", "message", fallback)

    if "resourceUri" in document:  # a plain request: envelopes carry it in their data
        return document, None, None

    if "specversion" in document:  # CloudEvents 1.0, structured JSON
        envelope_id = _text_or_none(document.get("id"))
        known = {"requestId": envelope_id} if envelope_id else fallback
        traceparent = document.get("traceparent")
        if "data_base64" in document and document["data_base64"] is not None:
            if not isinstance(document["data_base64"], str):
                raise InvalidRequest("data_base64 must be a base64 string", "data_base64", known)
            data = _parse_json_or_base64_json(_b64_or_invalid(document["data_base64"], known), "data_base64", known)
        elif "data" in document:
            data = document["data"]
        else:
            raise InvalidRequest("CloudEvent carries no data (data or data_base64)", "data", known)
        return _object_or_invalid(data, "data", known), envelope_id, traceparent

    if "eventType" in document and "data" in document:  # Event Grid schema
        envelope_id = _text_or_none(document.get("id"))
        known = {"requestId": envelope_id} if envelope_id else fallback
        return _object_or_invalid(document["data"], "data", known), envelope_id, None

    return document, None, None


def _b64_or_invalid(text: str, known: dict) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise InvalidRequest("data_base64 is not valid base64", "data_base64", known) from None


def _object_or_invalid(data, target: str, known: dict) -> dict:
    if isinstance(data, str):  # data sent as a JSON string
        try:
            data = json.loads(data)
        except ValueError:
            raise InvalidRequest(f"{target} is not a JSON object", target, known) from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"{target} must be a JSON object (the deletion request)", target, known)
    return data


def _text_or_none(value) -> str | None:
    return value if _is_text(value) else None


def _is_text(value) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= MAX_TEXT_FIELD and value.isprintable()


def resource_uri_problem(value) -> str | None:
    """Why `value` is not an ARM resource id usable in the operation's path, or None when it is."""
    if not isinstance(value, str):
        return "resourceUri must be a string"
    if len(value) > MAX_RESOURCE_URI:
        return f"resourceUri is {len(value)} characters; at most {MAX_RESOURCE_URI} are accepted"
    if _FORBIDDEN_IN_URI.search(value):
        return "resourceUri must not contain '?', '#', '%', '\\', whitespace or control characters"
    if not value.startswith("/"):
        return "resourceUri must start with '/subscriptions/'"
    segments = value[1:].split("/")
    if any(s == "" for s in segments):
        return "resourceUri must not contain empty segments (// or a trailing /)"
    if any(s in (".", "..") for s in segments):
        return "resourceUri must not contain '.' or '..' segments"
    expected = "/subscriptions/{id}/resourceGroups/{name}/providers/{namespace}/{type}/{name}[/{type}/{name}]..."
    if (
        len(segments) < 8
        or len(segments) % 2
        or segments[0].lower() != "subscriptions"
        or segments[2].lower() != "resourcegroups"
        or segments[4].lower() != "providers"
    ):
        return f"resourceUri is not an ARM resource id of the form {expected}"
    return None


def _text_problem(name: str, value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        return f"{name} must be a string"
    if not 1 <= len(value) <= MAX_TEXT_FIELD:
        return f"{name} must be 1 to {MAX_TEXT_FIELD} characters long"
    if not value.isprintable():
        return f"{name} must contain printable characters only"
    return None


def valid_traceparent(value) -> str | None:
    """The W3C traceparent if `value` is a valid one, else None."""
    if not isinstance(value, str):
        return None
    match = _TRACEPARENT.match(value.strip())
    if not match:
        return None
    version, trace_id, parent_id, _ = match.groups()
    if version == "ff" or trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return value.strip()


def _validate(request: dict, default_request_id: str, envelope_traceparent) -> DeletionRequest:
    problems: list[tuple[str, str]] = []
    known: dict = {}
    for name in ("requestId", "correlationId", "checkpointId"):
        problem = _text_problem(name, request.get(name))
        if problem:
            problems.append((name, problem))
        elif request.get(name) is not None:
            known[name] = request[name]
    known.setdefault("requestId", default_request_id)

    resource_uri = request.get("resourceUri")
    if resource_uri is None:
        problems.insert(0, ("resourceUri", "resourceUri is required"))
    else:
        problem = resource_uri_problem(resource_uri)
        if problem:
            problems.insert(0, ("resourceUri", problem))
        else:
            known["resourceUri"] = resource_uri

    traceparent = None
    for candidate in (request.get("traceparent"), envelope_traceparent):
        if candidate is None:
            continue
        traceparent = valid_traceparent(candidate)
        if traceparent:
            break
        logger.warning("requestId=%s: dropped an invalid traceparent", known["requestId"])
    if traceparent:
        known["traceparent"] = traceparent

    if problems:
        raise InvalidRequest("; ".join(p for _, p in problems), problems[0][0], known)
    return DeletionRequest(
        resource_uri=resource_uri,
        request_id=known["requestId"],
        checkpoint_id=known.get("checkpointId"),
        correlation_id=known.get("correlationId"),
        traceparent=traceparent,
    )
