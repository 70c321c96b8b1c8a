"""The Logic Apps workflows in examples/, read and run with a small interpreter of their definitions
(tests/support/logic_apps.py): the enqueue workflow puts a request on the queue that the app and the
schema accept; the on-outcome workflow parses every event the app writes and branches on its outcome,
the policy events (ScVmm.CheckpointPolicy.Completed / .Failed) included; the nightly workflow puts one
policy request per listed VM on the queue, valid against schemas/policy-request.schema.json, every night."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from urllib.parse import quote, unquote

import pytest
from jsonschema import Draft4Validator

from shared.policy import Policy, parse_policy, policy_event
from shared.request import _DECODER, decode_request
from tests.support.contract import (
    ERRORS,
    EVENT_SCHEMA,
    EXAMPLES,
    REQUEST_SCHEMA,
    SUBS,
    TRACEPARENT,
    TYPE_PREFIX,
    URI,
    assert_valid_request_message,
    events_for,
    load,
    ref,
)
from tests.support.logic_apps import ENQUEUE_EXPRESSIONS, WINDOWS_TIME_ZONES, LogicApp, functions_used, run_workflow
from tests.support.paths import ROOT
from tests.support.policy import assert_valid as assert_valid_policy_event
from tests.support.schemas import SCHEMA_DOCS


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
    assert_reads_only_schema_members(switch, "Parse_event", EVENT_SCHEMA)
    delete = app.action("Delete_event_message")
    assert delete["runAfter"] == {"Switch_on_outcome": ["Succeeded"]}
    assert "triggerBody()?['MessageId']" in delete["inputs"]["path"]
    assert delete["inputs"]["queries"] == {"popreceipt": "@triggerBody()?['PopReceipt']"}


# --- the nightly retention policy workflow (issue 11) --------------------------------------------------

NIGHTLY = "logicapp-nightly-policy.json"
POLICY_REQUEST_SCHEMA = SCHEMA_DOCS["policy-request.schema.json"]
POLICY_EVENT_SCHEMA = SCHEMA_DOCS["policy-event.schema.json"]
POLICY_REQUEST = ref(POLICY_REQUEST_SCHEMA["$id"])
PRINTABLE = ref(REQUEST_SCHEMA["$id"] + "#/$defs/printableText")
RESOURCE_URI = ref(REQUEST_SCHEMA["$id"] + "#/$defs/resourceUri")
NIGHT = datetime(2026, 11, 27, 2, 0, 3, tzinfo=UTC)  # the trigger fired at 02:00 UTC
RUN_NAME = "08584390123456789012345678901CU07"
VMS = [
    URI,
    SUBS + "/resourceGroups/rg2/providers/Microsoft.HybridCompute/machines/web-01",
    SUBS + "/resourceGroups/RG3/providers/Microsoft.HybridCompute/machines/sql.prod_2",
]
# What the app appends to a policy's requestId for each deletion it makes: '/<checkpointID>' (a GUID).
CHILD_SUFFIX = len("/6f0b5a1e-0d1c-4b8e-9a51-2c3d4e5f6a01")


def nightly_messages(parameters: dict, now: datetime = NIGHT, run_name: str = RUN_NAME) -> list[str]:
    """The message texts one run of the nightly workflow puts on the requests queue."""
    app = LogicApp(NIGHTLY)
    run = run_workflow(app, parameters, now=now, run_name=run_name)
    assert set(run.statuses.values()) == {"Succeeded"}, run.statuses
    endpoint = app.parameter_default("queueEndpoint")
    path = f"/v2/storageAccounts/{quote(quote(endpoint, safe=''), safe='')}/queues/checkpoint-delete-requests/messages"
    connection = app.document["parameters"]["$connections"]["value"]["azurequeues"]["connectionId"]
    for call in run.calls:
        assert call["action"] == "Put_request_on_queue" and call["method"] == "post" and call["path"] == path
        assert call["host"] == {"connection": {"name": connection}}
        assert isinstance(call["body"], str)
    return [call["body"] for call in run.calls]


def valid_policy_message(text: str) -> tuple[dict, Policy]:
    """A policy request message: valid against policy-request.schema.json (and, through it, the deletion
    request schema), its shared fields accepted by the app's decoder, its policy by parse_policy."""
    assert len(text.encode()) <= 64 * 1024
    document = json.loads(text)
    assert POLICY_REQUEST.is_valid(document), [e.message for e in POLICY_REQUEST.iter_errors(document)]
    shared = {k: v for k, v in document.items() if k not in ("policy", "dryRun")}
    request = decode_request(json.dumps(shared), "msg-nightly")
    assert (request.resource_uri, request.request_id, request.correlation_id) == (
        document["resourceUri"],
        document["requestId"],
        document["correlationId"],
    )
    policy = parse_policy(_DECODER.decode(text))  # numbers read as written, as the app reads them
    assert policy is not None
    return document, policy


@pytest.mark.parametrize(
    ("parameters", "policy", "dry_run"),
    [
        ({}, {"keepLatest": 3}, False),
        (
            {"keepLatest": 0, "namePattern": "nightly-*", "dryRun": True},
            {"keepLatest": 0, "namePattern": "nightly-*"},
            True,
        ),
        (
            {"keepLatest": 1000, "namePattern": "pre-patch-2026-1?"},
            {"keepLatest": 1000, "namePattern": "pre-patch-2026-1?"},
            False,
        ),
    ],
    ids=["defaults", "namePattern, dry run", "largest keepLatest"],
)
def test_logic_app_nightly_policy_puts_one_valid_policy_request_per_vm(parameters, policy, dry_run):
    messages = nightly_messages({"vmResourceIds": VMS, **parameters})
    documents = [valid_policy_message(m)[0] for m in messages]
    assert Counter(d["resourceUri"] for d in documents) == Counter(VMS)  # each VM exactly once
    for document in documents:
        name = document["resourceUri"].rsplit("/", 1)[1]
        assert document["requestId"] == f"nightly-20261127-{name}"
        assert document["correlationId"] == RUN_NAME  # the workflow run's id
        assert document["policy"] == policy and document["dryRun"] is dry_run
        assert "checkpointId" not in document
        assert parse_policy(document) == Policy(policy["keepLatest"], policy.get("namePattern"), dry_run)
    assert len({d["requestId"] for d in documents}) == len(VMS)
    # Run again the same night (resubmitted): the same requests, under another correlationId.
    again = [json.loads(m) for m in nightly_messages({"vmResourceIds": VMS, **parameters}, run_name="08584-rerun")]
    assert {d["requestId"] for d in again} == {d["requestId"] for d in documents}
    assert {d["correlationId"] for d in again} == {"08584-rerun"}


def test_logic_app_nightly_policy_sends_one_request_per_vm_however_often_listed():
    assert nightly_messages({}) == []  # the default list is empty: nothing is sent until VMs are listed
    assert nightly_messages({"vmResourceIds": []}) == []
    listed = [VMS[0], VMS[1], VMS[0], VMS[2], VMS[1]]
    documents = [valid_policy_message(m)[0] for m in nightly_messages({"vmResourceIds": listed})]
    assert [d["resourceUri"] for d in documents] == VMS


def _longest_uri(name_character: str) -> str:
    prefix = SUBS + "/resourceGroups/r/providers/P/t/"
    return prefix + name_character * (1024 - len(prefix))


@pytest.mark.parametrize(
    "uri",
    [
        _longest_uri("n"),  # the longest name a resourceUri can end in
        _longest_uri("\u20ac"),  # as long, of characters that are 3 bytes in UTF-8 (9 once percent-encoded)
        _longest_uri("\U0001f5a5"),  # 4 bytes each
        SUBS + "/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/vm\u00ad1",  # soft hyphen (Cf)
        SUBS + "/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/vm\u200b\ufeff",  # zero width (Cf)
        SUBS + "/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/v",
    ],
    ids=["longest", "longest, 3-byte", "longest, 4-byte", "soft hyphen", "zero width", "one character"],
)
def test_logic_app_nightly_policy_request_id_fits_any_vm_name(uri):
    """The requestId is 1..256 printable characters for any name a valid resourceUri can end in: the name
    is percent-encoded (uriComponent: ASCII, printable) and cut to 200 characters, which also leaves room
    for the '/<checkpointID>' the app appends for each deletion."""
    assert len(uri) <= 1024 and RESOURCE_URI.is_valid(uri)
    (message,) = nightly_messages({"vmResourceIds": [uri]})
    document, _ = valid_policy_message(message)
    request_id = document["requestId"]
    assert 1 <= len(request_id) <= 256 - CHILD_SUFFIX and request_id.isprintable() and PRINTABLE.is_valid(request_id)
    name = uri.rsplit("/", 1)[1]
    encoded = quote(name, safe="")  # what uriComponent() makes of it: .NET's Uri.EscapeDataString
    assert request_id == "nightly-20261127-" + encoded[:200]
    if len(encoded) <= 200:
        assert unquote(request_id.removeprefix("nightly-20261127-")) == name


@pytest.mark.parametrize(
    ("zone", "now", "date"),
    [
        ("UTC", datetime(2026, 11, 27, 2, 0, tzinfo=UTC), "20261127"),
        ("W. Europe Standard Time", datetime(2026, 11, 27, 1, 0, tzinfo=UTC), "20261127"),  # 02:00 CET
        (
            "Tokyo Standard Time",
            datetime(2026, 11, 26, 17, 0, tzinfo=UTC),
            "20261127",
        ),  # 02:00 JST, the day before in UTC
        ("Pacific Standard Time", datetime(2026, 11, 27, 10, 0, tzinfo=UTC), "20261127"),  # 02:00 PST
        ("Pacific Standard Time", datetime(2026, 11, 27, 7, 59, tzinfo=UTC), "20261126"),
    ],
)
def test_logic_app_nightly_policy_dates_requests_in_its_time_zone(zone, now, date):
    (message,) = nightly_messages({"vmResourceIds": [URI], "timeZone": zone}, now=now)
    assert json.loads(message)["requestId"] == f"nightly-{date}-vm1"


def test_logic_app_nightly_policy_runs_every_night_at_two():
    app = LogicApp(NIGHTLY)
    (trigger,) = app.definition["triggers"].values()
    assert trigger["type"] == "Recurrence"
    recurrence = trigger["recurrence"]
    assert (recurrence["frequency"], recurrence["interval"]) == ("Day", 1)  # daily
    assert recurrence["schedule"] == {"hours": [2], "minutes": [0]}
    # A time zone applies only with a start time, and that start time must carry no offset (no Z).
    assert recurrence["timeZone"] == "@parameters('timeZone')"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT02:00:00", recurrence["startTime"])
    assert app.parameter_default("timeZone") in WINDOWS_TIME_ZONES
    parameters = app.definition["parameters"]
    assert {
        n: (p["type"], p["defaultValue"]) for n, p in parameters.items() if not n.startswith(("$", "queue", "requests"))
    } == {
        "vmResourceIds": ("Array", []),
        "keepLatest": ("Int", 3),
        "namePattern": ("String", ""),
        "dryRun": ("Bool", False),
        "timeZone": ("String", "UTC"),
    }


def test_logic_app_nightly_policy_enqueues_as_the_enqueue_example_does():
    nightly, enqueue = LogicApp(NIGHTLY), LogicApp("logicapp-enqueue-request.json")
    put, model = nightly.action("Put_request_on_queue"), enqueue.action("Put_request_on_queue")
    assert put["type"] == model["type"] == "ApiConnection"
    assert put["inputs"] == model["inputs"]  # same connection, queue, path and message text
    assert nightly.document["parameters"] == enqueue.document["parameters"]  # the same $connections shape
    for name in ("$connections", "queueEndpoint", "requestsQueue"):
        assert nightly.definition["parameters"][name] == enqueue.definition["parameters"][name]
    loop = nightly.action("For_each_VM")
    assert loop["type"] == "Foreach" and set(loop["actions"]) == {"Compose_request", "Put_request_on_queue"}
    request = nightly.action("Compose_request")["inputs"]
    assert set(request) <= set(POLICY_REQUEST_SCHEMA["properties"]) | set(REQUEST_SCHEMA["properties"])


# --- the on-outcome workflow and the policy events -----------------------------------------------------

FACTS = {"requestId": "nightly-20261127-vm1", "correlationId": RUN_NAME, "resourceUri": URI, "traceparent": TRACEPARENT}
IDS = [f"6f0b5a1e-0d1c-4b8e-9a51-2c3d4e5f6a0{i}" for i in range(1, 6)]
NOW = 1_790_000_000.0


def policy_events() -> list[dict]:
    """Policy events as the app builds them (shared.policy.policy_event), and the samples in examples/."""
    uncorrelated = {k: v for k, v in FACTS.items() if k not in ("correlationId", "traceparent")}
    events = [
        load("policy-event-completed.json"),
        load("policy-event-failed.json"),
        policy_event("Completed", FACTS, Policy(keep_latest=3), NOW, deleted=IDS[:2], kept=IDS[2:]),
        policy_event("Completed", FACTS, Policy(3, "nightly-*", True), NOW, deleted=IDS[:1], kept=IDS[1:]),
        policy_event("Completed", FACTS, Policy(keep_latest=0), NOW, deleted=IDS[:1], failed=IDS[1:2], skipped=IDS[2:]),
        policy_event("Completed", uncorrelated, Policy(name_pattern="x*"), NOW, kept=IDS),
    ]
    events += [policy_event("Failed", uncorrelated, Policy(keep_latest=3), NOW, error=e) for e in ERRORS.values()]
    for event in events:
        assert_valid_policy_event(event, event["type"].rsplit(".", 1)[1])
    return events


def on_outcome(text: str):
    trigger = {"MessageText": text, "MessageId": "msg-7", "PopReceipt": "AgAAAAMAAAAAAAAA"}
    return run_workflow(LogicApp("logicapp-on-outcome.json"), trigger_body=trigger)


def assert_deleted_once(run) -> None:
    (call,) = run.calls
    assert call["action"] == "Delete_event_message" and call["method"] == "delete"
    assert call["path"].endswith("/queues/checkpoint-delete-events/messages/msg-7")
    assert call["queries"] == {"popreceipt": "AgAAAAMAAAAAAAAA"}


def test_logic_app_on_outcome_reacts_to_policy_events():
    for event in policy_events():
        run = on_outcome(json.dumps(event))
        assert set(run.statuses.values()) == {"Succeeded"}, (run.statuses, event)
        data = event["data"]
        common = {k: data.get(k) for k in ("requestId", "correlationId", "resourceUri", "policy")}
        if event["type"].endswith(".Completed"):
            assert "Policy_failed" not in run.statuses
            lists = {k: data[k] for k in ("dryRun", "deleted", "kept", "failed", "skipped")}
            everything_deleted = not data["failed"] and not data["skipped"]
            assert run.outputs["Policy_completed"] == {**common, **lists, "allSelectedDeleted": everything_deleted}
        else:
            assert "Policy_completed" not in run.statuses
            error = {f"error{k.title()}": data["error"][k] for k in ("code", "message", "target")}
            assert run.outputs["Policy_failed"] == {**common, **error}
        assert not {"Checkpoint_deleted", "Deletion_failed"} & set(run.statuses)  # not a deletion's outcome
        assert_deleted_once(run)


def test_logic_app_on_outcome_still_branches_on_deletion_events():
    events = [load(p.name) for p in sorted(EXAMPLES.glob("event-*.json"))]
    events += events_for(json.dumps({"resourceUri": URI, "correlationId": "c"}), ERRORS["RetriesExhausted"])
    events += events_for(json.dumps({"requestId": "r"}), ERRORS["RetriesExhausted"])  # InvalidRequest
    for event in events:
        run = on_outcome(json.dumps(event))
        assert set(run.statuses.values()) == {"Succeeded"}, (run.statuses, event)
        assert "Parse_policy_event" not in run.statuses
        status = event["data"]["status"]
        branch = {"Succeeded": {"Checkpoint_deleted"}, "Failed": {"Deletion_failed"}, "Accepted": set()}[status]
        assert branch == {"Checkpoint_deleted", "Deletion_failed"} & set(run.statuses)
        if status == "Failed":
            invalid = event["data"]["error"]["code"] == "InvalidRequest"
            assert run.outputs["Deletion_failed"]["invalidRequest"] is invalid
        assert_deleted_once(run)
    # A message that is not an event is left on the queue (it reappears after its visibility timeout).
    for text in ("not JSON", json.dumps({"type": "ScVmm.CheckpointPolicy.Completed", "data": {"requestId": "r"}})):
        run = on_outcome(text)
        assert "Failed" in run.statuses.values() and run.calls == []


def test_logic_app_on_outcome_reads_only_what_policy_events_have():
    app = LogicApp("logicapp-on-outcome.json")
    branch = app.action("If_policy_event")
    assert branch["expression"] == {
        "and": [{"startsWith": ["@body('Parse_event')?['type']", "ScVmm.CheckpointPolicy."]}]
    }
    switch = app.action("Switch_on_policy_outcome")
    assert switch["expression"] == "@body('Parse_policy_event')?['type']"
    types = POLICY_EVENT_SCHEMA["properties"]["type"]["enum"]
    assert sorted(c["case"] for c in switch["cases"].values()) == sorted(types)
    assert assert_reads_only_schema_members(switch, "Parse_policy_event", POLICY_EVENT_SCHEMA)
    # The deletion events' Parse JSON no longer requires data.status, which policy events do not have.
    parse = Draft4Validator(app.action("Parse_event")["inputs"]["schema"])
    for event in policy_events():
        assert parse.is_valid(event)


def test_every_logic_app_workflow_in_examples_is_tested_here():
    tested = {"logicapp-enqueue-request.json", "logicapp-on-outcome.json", NIGHTLY}
    assert {p.name for p in EXAMPLES.glob("logicapp-*.json")} == tested
    for name in tested:  # every expression parses, and every function in it is one the interpreter runs
        assert functions_used(LogicApp(name).definition), name


def test_the_nightly_request_of_docs_policies_md_is_the_workflows():
    """The sample under "Nightly cleanup with Logic Apps" is what the workflow sends (its fence has no
    language tag: tests/app/test_policy.py checks that page's ```json blocks against the policy examples)."""
    text = (ROOT / "docs" / "policies.md").read_text(encoding="utf-8")
    section = text.split("\n## Nightly cleanup with Logic Apps\n", 1)[1]
    (sample,) = re.findall(r"\n```\n(\{.*?\})\n```\n", section, re.DOTALL)
    (message,) = nightly_messages({"vmResourceIds": [URI]})
    assert json.loads(sample) == json.loads(message)


def assert_reads_only_schema_members(actions: dict, parse_action: str, schema: dict) -> list[str]:
    """Every `body('<parse_action>')?['..']` path in `actions` names a member `schema` defines (data's,
    the error's inside data.error, or the CloudEvent's); returns the paths found."""
    data, error = schema["$defs"]["data"]["properties"], EVENT_SCHEMA["$defs"]["error"]["properties"]
    paths = re.findall(rf"body\('{parse_action}'\)((?:\?\['\w+'\])+)", json.dumps(actions))
    for path in paths:
        keys = re.findall(r"\['(\w+)'\]", path)
        if keys[0] == "data":
            assert keys[1] in data, path
            if keys[1] == "error" and len(keys) > 2:
                assert keys[2] in error, path
        else:
            assert keys[0] in schema["$defs"]["cloudEvent"]["properties"], path
    return paths
