"""Deletion requests: decoding a queue message (plain, base64, Event Grid, CloudEvents) and validating it.

Whatever the message holds, `decode_request` returns a DeletionRequest or raises InvalidRequest (contract
section 3: no input may crash the function), and what an InvalidRequest carries can go into an event as is.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TYPE_CHECKING

from .logs import get_logger
from .resource_ids import MAX_RESOURCE_URI, NONCHARACTERS, resource_uri_problem

if TYPE_CHECKING:
    from .policy import Policy

logger = get_logger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024
MAX_TEXT_FIELD = 256
MAX_NESTING = 64  # arrays and objects inside one another; an envelope around a request needs 2

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_NOT_EVENT_TEXT = re.compile(r"[\ud800-\udfff" + NONCHARACTERS + "]")
# The nesting scan: JSON strings (possessive, so an unterminated one costs linear time), then brackets.
_JSON_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]++")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}

# Members the app reads, by the object they are in: a repeated one makes the message ambiguous.
_REQUEST_FIELDS = ("resourceUri", "checkpointId", "requestId", "correlationId")
_CLOUDEVENT_MEMBERS = ("id", "data", "data_base64")
_EVENTGRID_MEMBERS = ("id", "data")
_EVENT_FIELDS = (*_REQUEST_FIELDS, "traceparent")  # what InvalidRequest.fields may carry


@dataclass(frozen=True)
class DeletionRequest:
    resource_uri: str
    request_id: str
    checkpoint_id: str | None = None
    correlation_id: str | None = None
    traceparent: str | None = None
    policy: Policy | None = None  # a retention policy request (shared/policy.py) instead of one checkpoint


@dataclass
class InvalidRequest(Exception):
    """A message that is not a valid deletion request.

    `fields` holds what could still be read from it (valid values only: printable, bounded text), so the
    `Failed` event can name the request, its resource and its correlation id.
    """

    message: str
    target: str
    fields: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


def decode_request(body: bytes | str, message_id: str) -> DeletionRequest:
    """Turn a queue message into a validated DeletionRequest, or raise InvalidRequest; never anything else."""
    default_id = _message_request_id(message_id)
    known = {"requestId": default_id}  # what has been read so far; an envelope's id replaces the message id
    try:
        return _decode(body, known)
    except InvalidRequest as invalid:
        invalid.fields = _event_fields(invalid.fields, default_id)
        raise
    except Exception as error:  # the last line of defence: a defect here must still end in an event
        name = type(error).__name__
        logger.error("requestId=%s: reading the message failed with %s at %s", known["requestId"], name, _where(error))
        raise InvalidRequest(
            f"message could not be read ({name})", "message", _event_fields(known, default_id)
        ) from None


def _decode(body, known: dict) -> DeletionRequest:
    if isinstance(body, str):
        raw = body.encode("utf-8", "surrogatepass")  # a lone surrogate is then no UTF-8, and refused as such
    elif isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body)
    else:
        raise InvalidRequest("message must be bytes or text", "message", known)
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidRequest(f"message is {len(raw)} bytes; at most {MAX_MESSAGE_BYTES} are accepted", "message", known)
    document = _parse_json_or_base64_json(raw, "message", known)
    request, envelope_traceparent = _unwrap(document, known)
    return _validate(request, known["requestId"], envelope_traceparent)


# --- JSON --------------------------------------------------------------------------------------------


class _NotJson(ValueError):
    """Text Python's json module reads but RFC 8259 does not: NaN, Infinity, -Infinity."""


class _JsonNumber:
    """A number, kept as its JSON text: no field of a request is a number, so none is converted (which
    keeps a 60,000-digit integer from costing time or hitting the int-string limit, and 1e999999 from
    becoming inf)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


class _Repeated(dict):
    """An object whose JSON text names a member more than once (the last value is kept, as json does);
    `names` holds those names, where shared.policy.parse_policy looks for them."""

    names: frozenset = frozenset()


def object_with_repeats(pairs: list) -> dict:
    """json's object_pairs_hook that remembers the names given more than once (`names`)."""
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set = set()
    names = set()
    for name, _ in pairs:
        (names if name in seen else seen).add(name)
    repeated = _Repeated(obj)
    repeated.names = frozenset(names)
    return repeated


def _refuse_constant(name: str):
    raise _NotJson(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(
    object_pairs_hook=object_with_repeats,
    parse_int=_JsonNumber,
    parse_float=_JsonNumber,
    parse_constant=_refuse_constant,
)


def _too_deep(text: str) -> bool:
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return False
    brackets = _NOT_A_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > MAX_NESTING


def _loads(text: str, target: str, known: dict):
    """The JSON value of `text`; ValueError when it is no JSON. Nesting is bounded before parsing, so the
    parser's recursion can never run out of stack."""
    if _too_deep(text):
        raise InvalidRequest(f"{target} nests arrays or objects more than {MAX_NESTING} levels deep", target, known)
    return _DECODER.decode(text)


def _parse_json_or_base64_json(raw: bytes, target: str, known: dict):
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidRequest(f"{target} is not UTF-8 text", target, known) from None
    try:
        return _loads(text, target, known)
    except ValueError as error:
        reason = f" ({error})" if isinstance(error, _NotJson) else ""
    try:  # binascii.Error, non-ASCII text and UnicodeDecodeError are all ValueErrors
        decoded = base64.b64decode("".join(text.split()), validate=True).decode("utf-8-sig")
    except ValueError:
        raise InvalidRequest(f"{target} is not valid JSON{reason}, nor base64 of JSON", target, known) from None
    try:
        return _loads(decoded, target, known)
    except ValueError as error:
        reason = f" ({error})" if isinstance(error, _NotJson) else ""
        raise InvalidRequest(f"{target} is base64 of text that is not valid JSON{reason}", target, known) from None


# --- envelopes ---------------------------------------------------------------------------------------

_AMBIGUOUS = object()  # a member given more than once where only one may be (a traceparent: dropped)


def _unwrap(document, known: dict) -> tuple[dict, object]:
    """Return (request object, envelope traceparent) for each accepted envelope; an envelope's id, when
    usable, becomes known["requestId"]."""
    if isinstance(document, list):
        raise InvalidRequest("message must be a JSON object (not an array)", "message", known)
    if not isinstance(document, dict):
        raise InvalidRequest("message must be a JSON object", "message", known)

    if "resourceUri" in document:  # a plain request: envelopes carry it in their data
        return _request_object(document, "message", known), None

    if "specversion" in document:  # CloudEvents 1.0, structured JSON
        _refuse_repeated(document, _CLOUDEVENT_MEMBERS, "message", known)
        _read_envelope_id(document, known)
        traceparent = _member(document, "traceparent")
        if document.get("data_base64") is not None:
            if not isinstance(document["data_base64"], str):
                raise InvalidRequest("data_base64 must be a base64 string", "data_base64", known)
            data = _parse_json_or_base64_json(_b64_or_invalid(document["data_base64"], known), "data_base64", known)
            return _request_object(data, "data_base64", known), traceparent
        if "data" in document:
            return _request_object(document["data"], "data", known), traceparent
        raise InvalidRequest("CloudEvent carries no data (data or data_base64)", "data", known)

    if "eventType" in document and "data" in document:  # Event Grid schema
        _refuse_repeated(document, _EVENTGRID_MEMBERS, "message", known)
        _read_envelope_id(document, known)
        return _request_object(document["data"], "data", known), None

    return _request_object(document, "message", known), None


def _read_envelope_id(envelope: dict, known: dict) -> None:
    envelope_id = _text_or_none(envelope.get("id"))
    if envelope_id:
        known["requestId"] = envelope_id


def _member(obj: dict, name: str):
    return _AMBIGUOUS if name in getattr(obj, "names", ()) else obj.get(name)


def _refuse_repeated(obj: dict, members: tuple[str, ...], where: str, known: dict) -> None:
    for name in members:
        if name in getattr(obj, "names", ()):
            raise InvalidRequest(f"{where} has more than one member named {name}", name, known)


def _b64_or_invalid(text: str, known: dict) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or text that is not ASCII
        raise InvalidRequest("data_base64 is not valid base64", "data_base64", known) from None


def _request_object(data, target: str, known: dict) -> dict:
    if isinstance(data, str):  # data sent as a JSON string
        try:
            data = _loads(data, target, known)
        except ValueError as error:
            reason = f" ({error})" if isinstance(error, _NotJson) else ""
            raise InvalidRequest(f"{target} is not a JSON object{reason}", target, known) from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"{target} must be a JSON object (the deletion request)", target, known)
    _refuse_repeated(data, _REQUEST_FIELDS, target, known)
    return data


# --- fields ------------------------------------------------------------------------------------------


def _text_or_none(value) -> str | None:
    return value if _is_text(value) else None


def _is_text(value) -> bool:
    """1..256 printable characters: isprintable() excludes controls, format characters, lone surrogates,
    private use, unassigned code points and so every noncharacter, so such text can go into an event."""
    return isinstance(value, str) and 1 <= len(value) <= MAX_TEXT_FIELD and value.isprintable()


def _message_request_id(message_id) -> str:
    """The queue message id as the default requestId (the queue service's is a GUID; anything else is made
    printable and bounded here, so that the event can still carry it)."""
    if _is_text(message_id):
        return message_id
    text = message_id if isinstance(message_id, str) else ""
    cleaned = "".join(c if c.isprintable() else "\ufffd" for c in text[:MAX_TEXT_FIELD])
    return cleaned or "unknown-message-id"


def _event_fields(fields: dict, default_id: str) -> dict:
    """Only the fields an event carries, and only as text an event can carry (a defence in depth: every
    value put in them is validated already)."""
    safe = {
        name: value
        for name in _EVENT_FIELDS
        if isinstance(value := fields.get(name), str)
        and 1 <= len(value) <= MAX_RESOURCE_URI
        and not _NOT_EVENT_TEXT.search(value)
    }
    safe.setdefault("requestId", default_id)
    return safe


def _where(error: BaseException) -> str:
    """Where `error` was raised, as function (file:line); no value of the message."""
    tb = error.__traceback__
    if tb is None:
        return "an unknown place"
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{code.co_name} ({os.path.basename(code.co_filename)}:{tb.tb_lineno})"


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
    from .policy import PolicyInvalid, parse_policy  # here: policy.py builds on this module

    policy = None
    try:
        policy = parse_policy(request)
    except PolicyInvalid as invalid:
        problems.append((invalid.target, invalid.message))

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
    for candidate in (_member(request, "traceparent"), envelope_traceparent):
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
        policy=policy,
    )
