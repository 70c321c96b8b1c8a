"""Property-based: whatever a message holds, decode_request returns a DeletionRequest or raises InvalidRequest
(contract section 3: no input may crash the function), and the event the app writes for it can be written
(section 4: valid UTF-8, no lone surrogate, no noncharacter, under 48 KiB).

Generated: arbitrary bytes; arbitrary JSON values (NaN, Infinity, huge numbers, lone surrogates, deep
nesting); requests with valid, broken and arbitrary fields, repeated members, in each envelope (plain, Event
Grid, CloudEvents with data, data as a JSON string, data_base64), as arrays of one, plain text or base64.
Hypothesis runs derandomized (fixed examples, no example database) so CI sees the same cases each run.
`event_problem` is the "event can be written" check; the fuzz harness (localdev/fuzz_decode.py) reuses it.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import uuid
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import app_error
from shared.events import outcome_event
from shared.request import MAX_NESTING, DeletionRequest, InvalidRequest, decode_request

MAX_EVENT_BYTES = 48 * 1024
NOW = 1_790_000_000.0
_NONCHARACTERS = "\ufdd0-\ufdef" + "".join(chr(p | 0xFFFE) + chr(p | 0xFFFF) for p in range(0, 0x110000, 0x10000))
NOT_EVENT_TEXT = re.compile("[\ud800-\udfff" + _NONCHARACTERS + "]")


def event_of(outcome: DeletionRequest | InvalidRequest) -> dict:
    """The terminal event the app builds for a decoded message (submit.py: Failed/InvalidRequest), or for a
    valid request the Succeeded event carrying all of it."""
    if isinstance(outcome, InvalidRequest):
        error = app_error("InvalidRequest", outcome.message, outcome.target)
        return outcome_event("Failed", {**outcome.fields, "completedAt": NOW}, NOW, error)
    facts = {
        "requestId": outcome.request_id,
        "resourceUri": outcome.resource_uri,
        "checkpointId": outcome.checkpoint_id,
        "correlationId": outcome.correlation_id,
        "traceparent": outcome.traceparent,
    }
    return outcome_event("Succeeded", {**facts, "submittedAt": NOW, "completedAt": NOW}, NOW)


def event_problem(outcome: DeletionRequest | InvalidRequest) -> str | None:
    """Why the event for `outcome` could not be written to the events queue, or None when it can."""
    try:
        event = event_of(outcome)
        data = json.dumps(event, ensure_ascii=False, allow_nan=False).encode("utf-8")  # strict UTF-8
    except Exception as error:
        return f"the event cannot be built or serialised: {type(error).__name__}: {error}"
    found = NOT_EVENT_TEXT.search(data.decode("utf-8"))
    if found:
        return f"the event carries U+{ord(found.group()):04X}"
    if len(data) >= MAX_EVENT_BYTES:
        return f"the event is {len(data)} bytes"
    if not event["data"].get("requestId") or not event["id"].startswith(event["data"]["requestId"]):
        return "the event names no requestId"
    return None


def message_outcome(body, message_id: str = "msg-1") -> tuple[str, str | None]:
    """Decode `body`: ("request" | "invalid", event_problem of the outcome). Anything decode_request raises
    other than InvalidRequest propagates: that is a crash."""
    try:
        return "request", event_problem(decode_request(body, message_id))
    except InvalidRequest as invalid:
        return "invalid", event_problem(invalid)


# --- strategies: everything is built as text, so that members can repeat and numbers be any JSON number --

HYPOTHESIS = {
    "derandomize": True,
    "database": None,
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
ANY_CHAR = st.characters(codec=None, exclude_categories=())  # lone surrogates and noncharacters too
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
NAMES = ["resourceUri", "checkpointId", "requestId", "correlationId", "traceparent"]
NAMES += ["specversion", "eventType", "id", "data", "data_base64", "type", "source", "subject"]
ODD_NUMBERS = ["9" * 5000, "-" + "9" * 400, "1e999999", "-1E+999999999999999999999", "1e-999999", "-0.0", "1.5e308"]
ODD_TEXTS = ["", " ", "\ud800", "\udfff", "\ufffe", "\U0010ffff", "\ufdd0", "\u2028", "\x00", "[" * 70, "NaN"]


def dumps(value, ascii_only: bool = True) -> str:
    return json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8", "surrogatepass")).decode("ascii")


texts = st.one_of(st.text(ANY_CHAR, max_size=12), st.sampled_from(ODD_TEXTS), st.text(max_size=40))
leaf_texts = st.one_of(
    st.sampled_from(["null", "true", "false", "NaN", "Infinity", "-Infinity", *ODD_NUMBERS]),
    st.integers().map(str),
    st.floats().map(dumps),
    texts.map(dumps),
)


def object_text(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{dumps(name)}:{value}" for name, value in pairs) + "}"


value_texts = st.recursive(
    leaf_texts,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(st.tuples(st.one_of(st.sampled_from(NAMES), texts), inner), max_size=4).map(object_text),
    ),
    max_leaves=12,
)


def deep(text: str, depth: int, opening: str = "[") -> str:
    closing = "]" if opening == "[" else "}"
    opening = "[" if opening == "[" else '{"x":'
    return opening * depth + text + closing * depth


# 12,000: deeper than the recursion limit even while Hypothesis runs a test (it raises the limit by 2,000)
nestings = st.sampled_from([MAX_NESTING - 2, MAX_NESTING, MAX_NESTING + 1, 1000, 12000])


def rarely(draw, one_in: int = 10) -> bool:
    """True about once in `one_in` draws (Hypothesis draws the bounds of a range more often: 0 is avoided)."""
    return draw(st.integers(0, one_in - 1)) == one_in // 2


def mostly(valid, other, in_ten: int = 7):
    """`valid` `in_ten` times in ten, else `other`: most generated messages should reach the valid path."""
    return st.integers(0, 9).flatmap(lambda n: valid if n < in_ten else other)


@st.composite
def resource_uris(draw) -> str:
    subscription = str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1))))
    subscription = draw(mostly(st.sampled_from([subscription, subscription.upper()]), st.just(subscription[:-1])))
    name = draw(mostly(st.sampled_from(["vm1", "VM-2", "\u00e9"]), st.text(ANY_CHAR, min_size=1, max_size=6)))
    return f"/subscriptions/{subscription}/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/{name}"


field_values = {
    "resourceUri": mostly(resource_uris(), st.one_of(resource_uris().map(lambda u: u + "/x"), texts), 8),
    "checkpointId": mostly(st.sampled_from(["cp-1", "\u00e9", None]), texts),
    "requestId": mostly(st.sampled_from(["req-1", "r" * 256, None]), st.one_of(texts, st.just("r" * 257))),
    "correlationId": mostly(st.just("c-1"), texts),
    "traceparent": mostly(st.just(TRACEPARENT), texts),
}


@st.composite
def request_texts(draw) -> str:
    pairs = []
    for name, values in field_values.items():
        if name == "resourceUri" or draw(st.booleans()):
            value = dumps(draw(values), draw(st.booleans())) if not rarely(draw) else draw(value_texts)
            pairs.append((name, value))
    pairs += draw(st.lists(st.tuples(texts, value_texts), max_size=2))
    return object_text(draw(arranged(pairs)))


@st.composite
def arranged(draw, pairs: list) -> list:
    """The pairs shuffled, sometimes with one of them repeated (a member named twice)."""
    pairs = draw(st.permutations(pairs)) if pairs else []
    if pairs and rarely(draw):
        pairs.insert(draw(st.integers(0, len(pairs))), draw(st.sampled_from(pairs)))
    return pairs


@st.composite
def data_texts(draw) -> str:
    """A request, or anything else, as the JSON text an envelope's data holds."""
    data = draw(mostly(request_texts(), value_texts, 8))
    if rarely(draw):
        data = deep(data, draw(nestings), draw(st.sampled_from("[{")))
    if rarely(draw):
        data = "[" + data + "]"  # an array of one
    return data


@st.composite
def envelope_texts(draw) -> str:
    data = draw(data_texts())
    envelope_id = draw(mostly(st.just('"ev-1"'), st.one_of(texts.map(dumps), value_texts)))
    kind = draw(st.sampled_from(["plain", "eventgrid", "cloudevents"]))
    if kind == "plain":
        return data
    form = draw(st.sampled_from(["data", "data", "string", "base64", "base64", "both", "none", "junk base64"]))
    if kind == "eventgrid":
        pairs = [("id", envelope_id), ("eventType", '"t"'), ("subject", '"s"'), ("eventTime", '"2026-01-01T00:00:00Z"')]
    else:
        pairs = [("specversion", '"1.0"'), ("id", envelope_id), ("type", '"t"'), ("source", '"/s"')]
        if draw(st.booleans()):
            pairs.append(("traceparent", draw(mostly(st.just(dumps(TRACEPARENT)), value_texts))))
    if form == "string":
        pairs.append(("data", dumps(data)))  # data as a JSON string
    elif form in ("data", "both") or (kind == "eventgrid" and form != "none"):
        pairs.append(("data", data))
    if kind == "cloudevents" and form in ("base64", "both"):
        pairs.append(("data_base64", dumps(b64(data))))
    elif kind == "cloudevents" and form == "junk base64":
        pairs.append(("data_base64", draw(st.one_of(texts.map(dumps), value_texts))))
    return object_text(draw(arranged(pairs)))


@st.composite
def messages(draw):
    """A message body as the queue trigger gives it: bytes or str, plain or base64, sometimes broken."""
    text = draw(envelope_texts())
    if rarely(draw):
        text = "[" + text + "]"
    if rarely(draw, 20):
        text = deep(text, draw(nestings), draw(st.sampled_from("[{")))
    raw = text.encode("utf-8", "surrogatepass")  # a lone surrogate escaped by no JSON: no UTF-8
    how = draw(st.sampled_from(["bytes"] * 3 + ["str", "base64", "base64 lines", "bom", "cut", "flip"]))
    if how == "str":
        return text
    if how.startswith("base64"):
        encoded = base64.b64encode(raw)
        return b"\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) if how == "base64 lines" else encoded
    if how == "bom":
        return b"\xef\xbb\xbf" + raw
    if how == "cut" and raw:
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if how == "flip" and raw:
        at = draw(st.integers(0, len(raw) - 1))
        return raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1 :]
    return raw


message_ids = mostly(st.just("msg-1"), st.one_of(st.text(ANY_CHAR, max_size=20), st.just("m" * 300)))


# --- the properties ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def quiet_app_logs(caplog):
    """Invalid traceparents and requests are logged; thousands of records only slow the run down."""
    caplog.set_level(logging.CRITICAL, logger="shared")


def assert_handled(body, message_id: str = "msg-1") -> str:
    kind, problem = message_outcome(body, message_id)
    assert problem is None, (problem, body)
    return kind


def test_arbitrary_bytes():
    @settings(max_examples=500, **HYPOTHESIS)
    @given(st.binary(max_size=400), st.booleans(), message_ids)
    def check(body, as_base64, message_id):
        assert assert_handled(base64.b64encode(body) if as_base64 else body, message_id) == "invalid"

    check()


def test_arbitrary_json_values():
    @settings(max_examples=400, **HYPOTHESIS)
    @given(value_texts, st.sampled_from(["plain", "base64", "deep", "array"]), nestings, st.sampled_from("[{"))
    def check(text, how, depth, opening):
        if how == "deep":
            text = deep(text, depth, opening)
        elif how == "array":
            text = "[" + text + "]"
        assert_handled(b64(text) if how == "base64" else text)

    check()


def test_requests_in_every_envelope_and_encoding():
    kinds: Counter = Counter()

    @settings(max_examples=500, **HYPOTHESIS)
    @given(messages(), message_ids)
    def check(body, message_id):
        kinds[assert_handled(body, message_id)] += 1

    check()
    assert kinds["request"] >= 50 and kinds["invalid"] >= 250, kinds  # both paths are exercised


def test_the_check_finds_an_unwritable_event():
    def problem(message: str, request_id: str) -> str:
        return event_problem(InvalidRequest(message, "message", {"requestId": request_id})) or ""

    assert "cannot be built or serialised" in problem("m", "r\ud800")
    assert "U+FFFE" in problem("m", "r\ufffe") and "U+1FFFF" in problem("m", "r\U0001ffff")
    assert "bytes" in problem("m", "r" * MAX_EVENT_BYTES)
    assert "no requestId" in problem("m", "")
    assert problem("m", "r") == ""
