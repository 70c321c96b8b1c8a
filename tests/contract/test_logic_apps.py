"""The Logic Apps workflows in examples/, read with a small interpreter of their definitions
(tests/support/logic_apps.py): the enqueue workflow puts a request on the queue that the app and the
schema accept; the on-outcome workflow parses every event the app writes and branches on its outcome."""

from __future__ import annotations

import json
import re

import pytest
from jsonschema import Draft4Validator

from tests.support.contract import (
    ERRORS,
    EVENT_SCHEMA,
    EXAMPLES,
    REQUEST_SCHEMA,
    TRACEPARENT,
    TYPE_PREFIX,
    URI,
    assert_valid_request_message,
    events_for,
    load,
)
from tests.support.logic_apps import ENQUEUE_EXPRESSIONS, LogicApp


@pytest.mark.parametrize(
    "values",
    [
        {
            "resourceUri": URI,
            "checkpointId": "cp-1",
            "requestId": "req-9",
            "correlationId": "c-9",
            "traceparent": TRACEPARENT,
        },
        # Only resourceUri posted, no traceparent header: the others evaluate to null, the run name is the requestId.
        {
            "resourceUri": URI,
            "checkpointId": None,
            "requestId": "08584512345678901234567890CU12",
            "correlationId": None,
            "traceparent": None,
        },
    ],
    ids=["every field", "only resourceUri"],
)
def test_logic_app_enqueue_puts_a_valid_request(values):
    app = LogicApp("logicapp-enqueue-request.json")
    compose = app.action("Compose_request")["inputs"]
    assert set(compose.values()) <= set(ENQUEUE_EXPRESSIONS), "an expression the test does not know"
    request = {name: values[ENQUEUE_EXPRESSIONS[expression]] for name, expression in compose.items()}
    assert set(request) <= set(REQUEST_SCHEMA["properties"])
    put = app.action("Put_request_on_queue")
    assert put["inputs"]["method"] == "post" and put["inputs"]["path"].endswith("/messages")
    assert put["inputs"]["body"] == "@{string(outputs('Compose_request'))}"
    assert "parameters('requestsQueue')" in put["inputs"]["path"]
    assert app.parameter_default("requestsQueue") == "checkpoint-delete-requests"
    decoded, _ = assert_valid_request_message(json.dumps(request, separators=(",", ":")))  # string() of the object
    assert decoded.resource_uri == URI and decoded.request_id == values["requestId"]
    trigger_schema = app.definition["triggers"]["manual"]["inputs"]["schema"]
    assert set(trigger_schema["properties"]) <= set(REQUEST_SCHEMA["properties"])
    assert trigger_schema["required"] == REQUEST_SCHEMA["required"]


def test_logic_app_on_outcome_parses_every_event_and_branches_on_the_outcome():
    app = LogicApp("logicapp-on-outcome.json")
    trigger = app.definition["triggers"]["When_there_are_messages_in_the_events_queue"]
    assert (
        trigger["inputs"]["path"].endswith("/message_trigger")
        and "parameters('eventsQueue')" in trigger["inputs"]["path"]
    )
    assert app.parameter_default("eventsQueue") == "checkpoint-delete-events"
    parse = app.action("Parse_event")
    assert parse["inputs"]["content"] == "@triggerBody()?['MessageText']"  # events are plain JSON text
    parse_schema = Draft4Validator(parse["inputs"]["schema"])  # Logic Apps' Parse JSON reads draft-04
    events = [load(p.name) for p in sorted(EXAMPLES.glob("event-*.json"))]
    for error in ERRORS.values():
        events += events_for(json.dumps({"resourceUri": URI, "correlationId": "c"}), error)
        events += events_for(json.dumps({"requestId": "r"}), error)
    for event in events:
        assert parse_schema.is_valid(event), list(parse_schema.iter_errors(event))
    switch = app.action("Switch_on_outcome")
    assert switch["expression"] == "@body('Parse_event')?['type']"
    assert {c["case"] for c in switch["cases"].values()} == {TYPE_PREFIX + "Succeeded", TYPE_PREFIX + "Failed"}
    # Every field a branch reads exists in the event schema.
    data = EVENT_SCHEMA["$defs"]["data"]["properties"]
    error = EVENT_SCHEMA["$defs"]["error"]["properties"]
    text = json.dumps(switch)
    for path in re.findall(r"body\('Parse_event'\)((?:\?\['\w+'\])+)", text):
        keys = re.findall(r"\['(\w+)'\]", path)
        if keys[0] == "data":
            assert keys[1] in data, path
            if keys[1] == "error" and len(keys) > 2:
                assert keys[2] in error, path
        else:
            assert keys[0] in EVENT_SCHEMA["$defs"]["cloudEvent"]["properties"], path
    delete = app.action("Delete_event_message")
    assert delete["runAfter"] == {"Switch_on_outcome": ["Succeeded"]}
    assert "triggerBody()?['MessageId']" in delete["inputs"]["path"]
    assert delete["inputs"]["queries"] == {"popreceipt": "@triggerBody()?['PopReceipt']"}
