"""Decoding and validation of deletion requests (contract section 3), without any service."""

import base64
import contextlib
import json
import random
import time
import timeit
from collections import Counter

import pytest

import shared.request as request_module
from shared.policy import Policy
from shared.request import MAX_MESSAGE_BYTES, MAX_NESTING, MAX_TEXT_FIELD, InvalidRequest, decode_request

GUID = "00000000-0000-0000-0000-000000000001"
URI = f"/subscriptions/{GUID}/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/vm1"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_plain_request_with_every_field():
    body = {
        "resourceUri": URI,
        "checkpointId": "cp1",
        "requestId": "r1",
        "correlationId": "c1",
        "traceparent": TRACEPARENT,
    }
    request = decode_request(json.dumps(body), "msg-1")
    assert (request.resource_uri, request.checkpoint_id, request.request_id) == (URI, "cp1", "r1")
    assert (request.correlation_id, request.traceparent) == ("c1", TRACEPARENT)


def test_request_id_defaults_to_the_message_id_and_null_checkpoint_means_none():
    request = decode_request(json.dumps({"resourceUri": URI, "checkpointId": None, "extra": 1}), "msg-2")
    assert request.request_id == "msg-2"
    assert request.checkpoint_id is None


def test_base64_of_json_is_accepted():
    text = base64.b64encode(json.dumps({"resourceUri": URI}).encode()).decode()
    assert decode_request(text, "m").resource_uri == URI


def test_event_grid_envelope_gives_data_and_its_id():
    event = {
        "id": "eg-1",
        "eventType": "X",
        "subject": "s",
        "eventTime": "2026-01-01T00:00:00Z",
        "data": {"resourceUri": URI},
    }
    request = decode_request(base64.b64encode(json.dumps(event).encode()), "m")
    assert (request.resource_uri, request.request_id) == (URI, "eg-1")


def test_cloudevent_with_data_base64_and_traceparent_extension():
    data = base64.b64encode(json.dumps({"resourceUri": URI, "checkpointId": "cp"}).encode()).decode()
    event = {
        "specversion": "1.0",
        "type": "t",
        "source": "/s",
        "id": "ce-1",
        "data_base64": data,
        "traceparent": TRACEPARENT,
    }
    request = decode_request(json.dumps(event), "m")
    assert (request.request_id, request.checkpoint_id, request.traceparent) == ("ce-1", "cp", TRACEPARENT)


def test_invalid_traceparent_is_dropped_not_rejected(caplog):
    request = decode_request(json.dumps({"resourceUri": URI, "traceparent": "nonsense"}), "m")
    assert request.traceparent is None
    assert "invalid traceparent" in caplog.text


BAD_URIS = {
    "relative": "subscriptions/" + GUID + "/resourceGroups/r/providers/P.N/t/n",
    "empty segment": "/subscriptions//resourceGroups/r/providers/P.N/t/n",
    "trailing slash": URI + "/",
    "dot segment": "/subscriptions/" + GUID + "/resourceGroups/./providers/P.N/t/n",
    "dotdot segment": "/subscriptions/" + GUID + "/resourceGroups/r/providers/P.N/t/n/../x",
    "query": URI + "?a=b",
    "fragment": URI + "#x",
    "percent": "/subscriptions/" + GUID + "/resourceGroups/r%2F/providers/P.N/t/n",
    "backslash": "/subscriptions/" + GUID + "/resourceGroups/r\\x/providers/P.N/t/n",
    "space": "/subscriptions/" + GUID + "/resourceGroups/r x/providers/P.N/t/n",
    "control": "/subscriptions/" + GUID + "/resourceGroups/r\u0001/providers/P.N/t/n",
    "no providers": "/subscriptions/" + GUID + "/resourceGroups/r/things/P.N/t/n",
    "odd segments": URI + "/extensions",
    "too short": "/subscriptions/" + GUID + "/resourceGroups/r",
    "too long": URI + "/sub/" + "x" * 1024,
    "subscription not a GUID": URI.replace(GUID, "s"),
    "not a string": 42,
}


@pytest.mark.parametrize("uri", BAD_URIS.values(), ids=BAD_URIS.keys())
def test_bad_resource_uri_is_named(uri):
    with pytest.raises(InvalidRequest) as caught:
        decode_request(json.dumps({"resourceUri": uri, "requestId": "r"}), "m")
    assert caught.value.target == "resourceUri"
    assert "resourceUri" in caught.value.message
    assert caught.value.fields == {"requestId": "r"}


def test_segment_names_are_case_insensitive():
    assert decode_request(json.dumps({"resourceUri": URI.replace("resourceGroups", "RESOURCEGROUPS")}), "m")


@pytest.mark.parametrize("name", ["checkpointId", "requestId", "correlationId"])
@pytest.mark.parametrize("value", ["", "x" * 257, 5, "a\nb"], ids=["empty", "long", "number", "control"])
def test_bad_text_fields_are_named(name, value):
    with pytest.raises(InvalidRequest) as caught:
        decode_request(json.dumps({"resourceUri": URI, name: value}), "m")
    assert caught.value.target == name
    assert name in caught.value.message
    assert caught.value.fields["resourceUri"] == URI


@pytest.mark.parametrize(
    ("body", "target"),
    [
        (b"not json", "message"),
        (b"\xff\xfe\x00", "message"),
        (b"[1, 2]", "message"),
        (b'"a string"', "message"),
        (json.dumps({"checkpointId": "cp"}).encode(), "resourceUri"),
        (json.dumps({"specversion": "1.0", "id": "e", "type": "t", "source": "s"}).encode(), "data"),
        (json.dumps({"specversion": "1.0", "id": "e", "data_base64": "!!"}).encode(), "data_base64"),
        (json.dumps({"eventType": "t", "id": "e", "data": [1]}).encode(), "data"),
    ],
)
def test_malformed_messages_are_named(body, target):
    with pytest.raises(InvalidRequest) as caught:
        decode_request(body, "m")
    assert caught.value.target == target
    assert caught.value.fields["requestId"] in ("m", "e")


def test_oversized_message_is_rejected():
    body = json.dumps({"resourceUri": URI, "pad": "x" * MAX_MESSAGE_BYTES})
    with pytest.raises(InvalidRequest) as caught:
        decode_request(body, "m")
    assert caught.value.target == "message"
    assert "bytes" in caught.value.message


@pytest.mark.parametrize("char", ["\ud800", "\udfff", "\ufffe", "\uffff"], ids=["D800", "DFFF", "FFFE", "FFFF"])
def test_resource_uri_with_a_character_no_queue_message_can_carry_is_rejected(char):
    with pytest.raises(InvalidRequest) as caught:
        decode_request(json.dumps({"resourceUri": URI + char}), "m")
    assert caught.value.target == "resourceUri"


def test_a_plain_request_with_envelope_like_members_is_still_a_plain_request():
    request = decode_request(json.dumps({"resourceUri": URI, "specversion": "1.0", "eventType": "X", "data": {}}), "m")
    assert (request.resource_uri, request.request_id) == (URI, "m")


def test_a_percent_in_a_request_id_does_not_break_its_log_lines(caplog):
    from shared.logs import get_logger, request_scope

    with request_scope("100%", "c%s"):
        get_logger("shared.test").warning("value %d", 5)
    assert "requestId=100% correlationId=c%s: value 5" in caplog.text


# --- no input escapes as a crash (contract section 3) ------------------------------------------------

DEEP_ARRAY = "[" * 1000 + "]" * 1000
DEEP_OBJECT = '{"a":' * 1000 + "1" + "}" * 1000


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def members(*pairs: tuple[str, str]) -> str:
    """A JSON object's text from (name, JSON text of the value) pairs, which may repeat a name."""
    return "{" + ", ".join(f"{json.dumps(name)}: {value}" for name, value in pairs) + "}"


def event_grid(data_json: str) -> str:
    return members(("id", '"e"'), ("eventType", '"t"'), ("subject", '"s"'), ("data", data_json))


def cloudevent(member: str, value_json: str) -> str:
    return members(("specversion", '"1.0"'), ("id", '"e"'), ("type", '"t"'), ("source", '"/s"'), (member, value_json))


def plain(*pairs: tuple[str, str]) -> str:
    return members(("resourceUri", json.dumps(URI)), *pairs)


def in_every_position(deep: str) -> dict[str, tuple[str, str]]:
    """(message text, target named) for `deep` wherever a message carries JSON: in the message's own text it is
    refused before anything is read; in JSON text inside it, after the envelope's id (which names the request)."""
    return {
        "plain": (deep, "message"),
        "base64": (b64(deep), "message"),
        "unknown field": (plain(("x", deep)), "message"),
        "event grid data": (event_grid(deep), "message"),
        "event grid, base64": (b64(event_grid(deep)), "message"),
        "event grid data as a JSON string": (event_grid(json.dumps(deep)), "data"),
        "cloudevent data": (cloudevent("data", deep), "message"),
        "cloudevent data as a JSON string": (cloudevent("data", json.dumps(deep)), "data"),
        "cloudevent data_base64": (cloudevent("data_base64", json.dumps(b64(deep))), "data_base64"),
        "cloudevent data_base64, base64": (b64(cloudevent("data_base64", json.dumps(b64(deep)))), "data_base64"),
    }


DEEP_CASES = {
    f"{shape}, {where}": case
    for shape, deep in (("arrays", DEEP_ARRAY), ("objects", DEEP_OBJECT))
    for where, case in in_every_position(deep).items()
}


@pytest.mark.parametrize(("text", "target"), DEEP_CASES.values(), ids=DEEP_CASES.keys())
def test_nesting_1000_deep_is_an_invalid_request_wherever_it_is(text, target):
    with pytest.raises(InvalidRequest) as caught:
        decode_request(text, "m")
    assert caught.value.target == target
    assert f"more than {MAX_NESTING} levels deep" in caught.value.message
    assert caught.value.fields == {"requestId": "m" if target == "message" else "e"}


def nested(depth: int) -> str:
    """A plain request whose unknown member makes the message `depth` levels deep."""
    return plain(("x", "[" * (depth - 1) + "]" * (depth - 1)))


def test_nesting_up_to_the_bound_is_read_and_one_more_is_refused():
    assert decode_request(nested(MAX_NESTING), "m").resource_uri == URI
    with pytest.raises(InvalidRequest):
        decode_request(nested(MAX_NESTING + 1), "m")


def test_brackets_inside_strings_are_not_nesting():
    body = {"resourceUri": URI, "note": "[{" * 5000 + '\\"]', "checkpointId": "cp[[["}
    assert decode_request(json.dumps(body), "m").checkpoint_id == "cp[[["


def test_the_nesting_scan_is_cheap_on_a_64_kib_message():
    deep = "[" * (MAX_NESTING + 6)
    worst = [
        "[" + "[[]]," * 13000 + "[]]",  # brackets only, within the bound
        json.dumps({"resourceUri": URI, "s": ['"\\[{' * 2000] * 5}),  # escapes and brackets in strings
        deep + '"' + "\\" * 32000,  # an unterminated string of escapes
        deep + '"' * 65000,  # quotes only
        '"[' * 32000,  # strings of brackets
    ]
    for text in worst:
        assert len(text.encode()) <= MAX_MESSAGE_BYTES

        def decode(text=text):
            with contextlib.suppress(InvalidRequest):
                decode_request(text, "m")

        # about 12 ms here; a scan that went back over the text would take seconds. The bound leaves
        # room for a machine busy with the suite's other workers.
        assert min(timeit.repeat(decode, number=1, repeat=5)) < 0.25, text[:40]


HUGE_INT = "9" * 60000


@pytest.mark.parametrize(
    "number",
    [HUGE_INT, "-" + HUGE_INT, "1e999999", "-1e999999", "1e-999999", "1." + "5" * 60000, "1E+9999999999999999999999"],
)
def test_huge_numbers_are_read_quickly_and_never_used(number):
    started = time.perf_counter()
    assert decode_request(plain(("size", number)), "m").resource_uri == URI
    with pytest.raises(InvalidRequest) as caught:
        decode_request(plain(("checkpointId", number)), "m")
    assert (caught.value.target, caught.value.message) == ("checkpointId", "checkpointId must be a string")
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("encode", [str, b64], ids=["plain", "base64"])
def test_nan_and_infinity_are_not_json(constant, encode):
    with pytest.raises(InvalidRequest) as caught:
        decode_request(encode(plain(("x", constant))), "m")
    assert caught.value.target == "message"
    assert "not valid JSON" in caught.value.message and constant.lstrip("-") in caught.value.message


ONE_REQUEST = json.dumps({"resourceUri": URI, "requestId": "r"})
ARRAYS_OF_ONE = {
    "plain": ("[" + ONE_REQUEST + "]", "message"),
    "event grid": ("[" + event_grid(ONE_REQUEST) + "]", "message"),
    "cloudevent": ("[" + cloudevent("data", ONE_REQUEST) + "]", "message"),
    "event grid data": (event_grid("[" + ONE_REQUEST + "]"), "data"),
    "cloudevent data": (cloudevent("data", "[" + ONE_REQUEST + "]"), "data"),
}


@pytest.mark.parametrize("encode", [str, b64], ids=["plain", "base64"])
@pytest.mark.parametrize(("text", "target"), ARRAYS_OF_ONE.values(), ids=ARRAYS_OF_ONE.keys())
def test_an_array_of_one_request_is_not_a_request(text, target, encode):
    with pytest.raises(InvalidRequest) as caught:
        decode_request(encode(text), "m")
    assert (caught.value.target, caught.value.fields) == (target, {"requestId": "m" if target == "message" else "e"})
    if target == "message":
        assert caught.value.message == "message must be a JSON object (not an array)"


NOT_GUIDS = {
    **{"a name": "s", "no dashes": GUID.replace("-", ""), "braces": "{" + GUID + "}", "short": GUID[:-1]},
    **{"long": GUID + "0", "not hex": GUID.replace("0000-0000-0000", "0000-000g-0000")},
    **{"dashes moved": "0000000-00000-0000-0000-000000000001", "fullwidth digit": GUID.replace("1", "\uff11")},
}


@pytest.mark.parametrize("subscription", NOT_GUIDS.values(), ids=NOT_GUIDS.keys())
def test_a_subscription_that_is_not_a_guid_is_refused(subscription):
    with pytest.raises(InvalidRequest) as caught:
        decode_request(json.dumps({"resourceUri": URI.replace(GUID, subscription), "requestId": "r"}), "m")
    assert caught.value.message == "resourceUri's subscription id must be a GUID"
    assert (caught.value.target, caught.value.fields) == ("resourceUri", {"requestId": "r"})


def test_a_subscription_guid_is_read_in_any_letter_case():
    for guid in ("4BF92F35-77B3-4DA6-A3CE-929D0E0E4736", "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"):
        uri = URI.replace(GUID, guid)
        assert decode_request(json.dumps({"resourceUri": uri}), "m").resource_uri == uri


@pytest.mark.parametrize(
    "char", ["\ufdd0", "\ufdef", "\U0001fffe", "\U0010ffff"], ids=["FDD0", "FDEF", "1FFFE", "10FFFF"]
)
def test_a_resource_uri_with_a_noncharacter_is_refused(char):
    with pytest.raises(InvalidRequest) as caught:
        decode_request(json.dumps({"resourceUri": URI + char}), "m")
    assert caught.value.target == "resourceUri"
    assert "resourceUri" not in caught.value.fields


def test_random_bytes_never_escape_as_anything_but_an_invalid_request():
    rng = random.Random(7)
    alphabet = b'[]{}",:0123456789eE.-+\\/ntrufalsNIy \t\n\xff\xfe\xc3\xa9\xed\xa0\x80=ABCabc'
    outcomes = Counter()
    for _ in range(3000):
        size = rng.randrange(0, 200)
        pick = rng.random()
        body = rng.randbytes(size) if pick < 0.4 else bytes(rng.choice(alphabet) for _ in range(size))
        if pick > 0.8:
            body = base64.b64encode(body)
        try:
            decode_request(body, "m")
            outcomes["request"] += 1
        except InvalidRequest as invalid:
            assert invalid.target and invalid.fields["requestId"] == "m"
            outcomes["invalid"] += 1
    assert outcomes["invalid"] == 3000


ODD = {  # message text, or something that is no text at all
    "data_base64 not ASCII": (cloudevent("data_base64", '"\u00e9\u00e9\u00e9\u00e9"'), "data_base64"),
    "a str no UTF-8 can carry": ("\ud800" + ONE_REQUEST, "message"),
    "two byte-order marks": (b"\xef\xbb\xbf\xef\xbb\xbf" + ONE_REQUEST.encode(), "message"),
    **{"empty": (b"", "message"), "padding only": (b"=" * 8, "message")},
    **{"None": (None, "message"), "an int, not bytes(5)": (5, "message")},
}


@pytest.mark.parametrize(("body", "target"), ODD.values(), ids=ODD.keys())
def test_odd_inputs_are_invalid_requests(body, target):
    with pytest.raises(InvalidRequest) as caught:
        decode_request(body, "m")
    assert caught.value.target == target


def test_a_repeated_member_the_app_reads_is_refused_and_named():
    text = plain(("checkpointId", '"a"'), ("checkpointId", '"b"'))
    with pytest.raises(InvalidRequest) as caught:
        decode_request(text, "m")
    assert caught.value.message == "message has more than one member named checkpointId"
    assert caught.value.target == "checkpointId"
    with pytest.raises(InvalidRequest) as caught:
        decode_request(event_grid(text), "m")
    assert (caught.value.target, caught.value.fields) == ("checkpointId", {"requestId": "e"})
    with pytest.raises(InvalidRequest) as caught:
        decode_request(members(("eventType", '"t"'), ("id", '"e1"'), ("id", '"e2"'), ("data", ONE_REQUEST)), "m")
    assert (caught.value.target, caught.value.fields) == ("id", {"requestId": "m"})


def test_repeated_unknown_members_are_ignored_and_a_repeated_traceparent_is_dropped(caplog):
    twice = ("traceparent", json.dumps(TRACEPARENT))
    request = decode_request(plain(("x", "1"), ("x", members(("y", "1"), ("y", "2"))), twice, twice), "m")
    assert (request.resource_uri, request.traceparent) == (URI, None)
    assert "invalid traceparent" in caplog.text


@pytest.mark.parametrize(
    "message_id", ["", "a\udcffb", "x" * 5000, "\ufffe"], ids=["empty", "surrogate", "long", "FFFE"]
)
def test_an_odd_message_id_is_made_printable_and_bounded(message_id):
    with pytest.raises(InvalidRequest) as caught:
        decode_request(b"nonsense", message_id)
    request_id = caught.value.fields["requestId"]
    assert request_id.isprintable() and 1 <= len(request_id) <= MAX_TEXT_FIELD


def test_an_unexpected_exception_is_an_invalid_request_that_names_what_was_read(monkeypatch, caplog):
    monkeypatch.setattr(request_module, "_validate", lambda *args: {}["a defect: KeyError"])
    with pytest.raises(InvalidRequest) as caught:
        decode_request(event_grid(ONE_REQUEST), "m")
    assert (caught.value.target, caught.value.fields) == ("message", {"requestId": "e"})
    assert "KeyError" in caught.value.message and "KeyError" in caplog.text


def test_a_policy_request_decodes_with_its_policy_and_never_as_a_deletion_of_the_body_empty():
    # read as a deletion, it would name no checkpoint and send ARM the body {}
    text = json.dumps({"resourceUri": URI, "requestId": "p1", "policy": {"namePattern": "pre-*"}, "dryRun": True})
    request = decode_request(text, "m")
    assert request.policy == Policy(name_pattern="pre-*", dry_run=True) and request.checkpoint_id is None


def test_a_dry_run_without_a_policy_is_refused_with_the_fields_read():
    with pytest.raises(InvalidRequest) as caught:
        decode_request(json.dumps({"resourceUri": URI, "requestId": "p1", "dryRun": True}), "m")
    assert caught.value.target == "dryRun" and "no policy" in caught.value.message
    assert caught.value.fields == {"requestId": "p1", "resourceUri": URI}


def test_dry_run_false_without_a_policy_is_an_ordinary_deletion():
    assert decode_request(json.dumps({"resourceUri": URI, "dryRun": False}), "m").checkpoint_id is None
