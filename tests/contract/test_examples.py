"""examples/ against the contracts: every request and event in examples/ (JSON samples, the Python
snippet, the shell script's dry run, the Event Grid subscription) validates and, for requests, decodes
with decode_request; the retention policy samples (examples/policy-*.json) against
schemas/policy-request.schema.json and schemas/policy-event.schema.json, the requests also through
shared.policy.parse_policy. The Logic Apps workflows (logicapp-*.json, the nightly retention policy one
included): test_logic_apps.py."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
import uuid

import pytest
from azure.storage.queue import QueueClient

from shared.policy import parse_policy
from shared.request import decode_request, valid_traceparent
from tests.support.contract import (
    EXAMPLES,
    REQUEST,
    REQUEST_SCHEMA,
    TRACEPARENT,
    URI,
    assert_valid_event,
    assert_valid_request_message,
    load,
    ref,
)
from tests.support.schemas import SCHEMA_DOCS


def test_example_request():
    text = (EXAMPLES / "request.json").read_text(encoding="utf-8")
    request, document = assert_valid_request_message(text)
    assert (request.resource_uri, request.request_id, request.traceparent) == (
        document["resourceUri"],
        document["requestId"],
        document["traceparent"],
    )
    assert decode_request(base64.b64encode(text.encode()), "m") == request  # the base64 form too
    assert document in REQUEST_SCHEMA["examples"]


@pytest.mark.parametrize("name", ["request-eventgrid.json", "request-cloudevent.json"])
def test_example_envelopes(name):
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    for message in (text, base64.b64encode(text.encode()).decode()):  # Event Grid delivers base64
        request, document = assert_valid_request_message(message)
        assert request.request_id == document["id"]  # data names no requestId: the envelope's id is used
        assert request.resource_uri == document["data"]["resourceUri"]
    if "specversion" in document:
        assert request.traceparent == document["traceparent"] == valid_traceparent(document["traceparent"])
    assert document.get("eventType", document.get("type")) == "ScVmm.CheckpointDelete.Requested"


def test_example_events():
    names = sorted(p.name for p in EXAMPLES.glob("event-*.json"))
    assert {"event-accepted.json", "event-succeeded.json", "event-failed.json"} <= set(names)
    for name in names:
        event = load(name)
        assert_valid_event(event)
        assert name.startswith("event-" + event["data"]["status"].lower())


def test_example_policy_messages():
    """The retention policy samples (issue 11; tests/app/test_policy*.py test the rest of shared/policy.py)."""
    names = sorted(p.name for p in EXAMPLES.glob("policy-*.json"))
    assert {"policy-request.json", "policy-event-completed.json", "policy-event-failed.json"} <= set(names)
    requests = ref(SCHEMA_DOCS["policy-request.schema.json"]["$id"])
    events = ref(SCHEMA_DOCS["policy-event.schema.json"]["$id"])
    for name in names:
        text = (EXAMPLES / name).read_text(encoding="utf-8")
        document = json.loads(text)
        if name.startswith("policy-request"):
            assert requests.is_valid(document), list(requests.iter_errors(document))
            shared = {k: v for k, v in document.items() if k not in ("policy", "dryRun")}
            assert decode_request(json.dumps(shared), "m").resource_uri == document["resourceUri"]
            assert decode_request(text, "m").policy == parse_policy(document) is not None
        else:
            assert events.is_valid(document), list(events.iter_errors(document))
            outcome = document["type"].rsplit(".", 1)[1].lower()
            assert name.startswith(f"policy-event-{outcome}")
            assert document["id"] == f"{document['data']['requestId']}:{outcome}"


def _snippet():
    spec = importlib.util.spec_from_file_location("enqueue_request_example", EXAMPLES / "enqueue_request.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_python_snippet_sends_a_valid_request(azurite, capsys):
    snippet = _snippet()
    queue = "t" + uuid.uuid4().hex[:12] + "-requests"
    requests_queue = QueueClient.from_connection_string(azurite.connection_string, queue)
    requests_queue.create_queue()  # the app's deployment creates it
    argv = [
        "--connection-string",
        azurite.connection_string,
        "--queue",
        queue,
        "--resource-uri",
        URI,
        "--checkpoint-id",
        "cp-1",
        "--correlation-id",
        "c-1",
        "--traceparent",
        TRACEPARENT,
    ]
    assert snippet.main(argv) == 0
    (message,) = requests_queue.receive_messages()
    request, document = assert_valid_request_message(message.content)
    assert capsys.readouterr().out.strip() == request.request_id == document["requestId"]
    assert (request.resource_uri, request.checkpoint_id, request.correlation_id) == (URI, "cp-1", "c-1")
    minimal = snippet.build_request(URI)
    assert REQUEST.is_valid(minimal) and set(minimal) == {"resourceUri", "requestId"}
    assert_valid_request_message(snippet.message_text(snippet.build_request(URI, "cp", request_id="é x")))


def test_shell_example_dry_run_prints_valid_messages():
    env = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable}
    env.pop("CHECKPOINT_REQUESTS_QUEUE", None)
    run = subprocess.run(
        ["bash", str(EXAMPLES / "enqueue_request.sh"), URI, "cp-1", "req-sh-1", "change-1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    messages = run.stdout.split()
    assert len(messages) == 2, run.stdout  # the az message, then checkpointctl's (a CloudEvent in base64)
    requests = [assert_valid_request_message(m)[0] for m in messages]
    assert [r.request_id for r in requests] == ["req-sh-1", "req-sh-1-ctl"]
    assert {(r.resource_uri, r.checkpoint_id, r.correlation_id) for r in requests} == {(URI, "cp-1", "change-1")}
    assert "az storage message put --auth-mode login" in run.stderr


def test_event_grid_subscription_example_matches_the_contract():
    bicep = (EXAMPLES / "eventgrid-subscription.bicep").read_text(encoding="utf-8")
    assert "param requestsQueueName string = 'checkpoint-delete-requests'" in bicep
    assert "'ScVmm.CheckpointDelete.Requested'" in bicep  # the type of the sample envelopes and checkpointctl's
    assert "endpointType: 'StorageQueue'" in bicep and "type: 'UserAssigned'" in bicep
    assert "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a" in bicep  # Storage Queue Data Message Sender


def test_every_example_is_listed_in_the_readme():
    """examples/README.md names every file beside it (each JSON sample and workflow is checked here or in
    test_logic_apps.py, which also requires a test for every logicapp-*.json)."""
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    names = sorted(p.name for p in EXAMPLES.iterdir() if p.is_file() and p.name != "README.md")
    assert "logicapp-nightly-policy.json" in names
    assert [n for n in names if f"`{n}`" not in readme] == []
