"""Decoding and validation of deletion requests (contract section 3), without any service."""

import base64
import json

import pytest

from shared.request import MAX_MESSAGE_BYTES, InvalidRequest, decode_request

URI = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/vm1"
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
    "relative": "subscriptions/s/resourceGroups/r/providers/P.N/t/n",
    "empty segment": "/subscriptions//resourceGroups/r/providers/P.N/t/n",
    "trailing slash": URI + "/",
    "dot segment": "/subscriptions/s/resourceGroups/./providers/P.N/t/n",
    "dotdot segment": "/subscriptions/s/resourceGroups/r/providers/P.N/t/n/../x",
    "query": URI + "?a=b",
    "fragment": URI + "#x",
    "percent": "/subscriptions/s/resourceGroups/r%2F/providers/P.N/t/n",
    "backslash": "/subscriptions/s/resourceGroups/r\\x/providers/P.N/t/n",
    "space": "/subscriptions/s/resourceGroups/r x/providers/P.N/t/n",
    "control": "/subscriptions/s/resourceGroups/r\u0001/providers/P.N/t/n",
    "no providers": "/subscriptions/s/resourceGroups/r/things/P.N/t/n",
    "odd segments": URI + "/extensions",
    "too short": "/subscriptions/s/resourceGroups/r",
    "too long": URI + "/sub/" + "x" * 1024,
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
