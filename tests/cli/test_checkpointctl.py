"""checkpointctl (docs/cli.md) against a real Azurite: enqueue, watch, status and their exit codes."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

from localdev.azurite import ACCOUNT_KEY, ACCOUNT_NAME
from shared.request import decode_request
from shared.tracking import Operation
from tests.support.cli import URI, URI2, event, run
from tests.support.paths import ROOT

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ENVELOPES = ("plain", "eventgrid", "cloudevents")
ENCODINGS = ("plain", "base64")


# --- the entry point, as a real process --------------------------------------------------------------


def test_real_process_help_and_enqueue_with_the_apps_environment(cli_azurite, queues):
    env = {**os.environ, "AzureWebJobsStorage": cli_azurite.connection_string}
    env["CHECKPOINT_REQUESTS_QUEUE"] = queues.names["requests"]
    env.pop("PYTHONPATH", None)
    command = [sys.executable, "-m", "checkpointctl"]

    shown = subprocess.run([*command, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert all(name in shown.stdout for name in ("enqueue", "watch", "status"))

    sent = subprocess.run(
        [*command, "enqueue", "--resource-uri", URI, "--checkpoint-id", "cp-1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    request_id = sent.stdout.strip()
    uuid.UUID(request_id)  # generated, so that the user can watch for it
    [message] = queues.messages("requests")
    request = decode_request(message.content, message.id)
    assert (request.request_id, request.resource_uri, request.checkpoint_id) == (request_id, URI, "cp-1")


@pytest.mark.parametrize("command", ["enqueue", "watch", "status"])
def test_each_command_has_help_with_examples(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert "examples:" in out and f"python -m checkpointctl {command}" in out


# --- enqueue -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("envelope", ENVELOPES)
def test_enqueue_from_flags_sends_what_the_app_accepts(capsys, queues, envelope, encoding):
    code, out, err = run(
        capsys,
        "enqueue",
        *queues.flags,
        "--resource-uri",
        URI,
        "--checkpoint-id",
        "cp-1",
        "--request-id",
        "req-1",
        "--correlation-id",
        "corr-1",
        "--traceparent",
        TRACEPARENT,
        "--envelope",
        envelope,
        "--encoding",
        encoding,
    )
    assert (code, out, err) == (0, "req-1\n", "")
    [message] = queues.messages("requests")
    request = decode_request(message.content, message.id)
    assert (request.resource_uri, request.checkpoint_id, request.request_id) == (URI, "cp-1", "req-1")
    assert (request.correlation_id, request.traceparent) == ("corr-1", TRACEPARENT)
    text = base64.b64decode(message.content).decode() if encoding == "base64" else message.content
    document = json.loads(text)
    if envelope == "plain":
        assert document["resourceUri"] == URI
    elif envelope == "eventgrid":
        assert (document["id"], document["data"]["resourceUri"]) == ("req-1", URI)
        assert {"eventType", "subject", "eventTime"} <= document.keys()
    else:
        assert (document["specversion"], document["id"], document["traceparent"]) == ("1.0", "req-1", TRACEPARENT)
        assert {"type", "source", "data"} <= document.keys()


@pytest.mark.parametrize("envelope", ENVELOPES)
def test_enqueue_without_request_id_generates_one_and_json_output_names_it(capsys, queues, envelope):
    code, out, _ = run(capsys, "enqueue", *queues.flags, "--resource-uri", URI, "--envelope", envelope, "--json")
    assert code == 0
    record = json.loads(out)
    uuid.UUID(record["requestId"])
    assert record["queue"] == queues.names["requests"]
    [message] = queues.messages("requests")
    request = decode_request(message.content, message.id)
    assert (request.request_id, request.checkpoint_id) == (record["requestId"], None)
    assert message.id == record["messageId"]


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("envelope", ENVELOPES)
@pytest.mark.parametrize("source", ["file", "stdin"])
def test_enqueue_from_json_lines(capsys, monkeypatch, tmp_path, queues, source, envelope, encoding):
    lines = [
        json.dumps({"resourceUri": URI, "checkpointId": "cp-1", "requestId": "a1", "extra": "ignored"}),
        "",
        json.dumps({"resourceUri": URI2, "correlationId": "c2"}),
        json.dumps({"resourceUri": URI, "checkpointId": None, "requestId": "a3", "traceparent": TRACEPARENT}),
    ]
    text = "\n".join(lines) + "\n"
    if source == "file":
        path = tmp_path / "requests.jsonl"
        path.write_text(text, encoding="utf-8")
        where = str(path)
    else:
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))
        where = "-"
    code, out, err = run(
        capsys, "enqueue", *queues.flags, "--file", where, "--envelope", envelope, "--encoding", encoding
    )
    assert code == 0, err
    sent = out.split()
    assert sent[0] == "a1" and sent[2] == "a3" and len(sent) == 3
    uuid.UUID(sent[1])
    requests = {}
    for message in queues.messages("requests"):
        request = decode_request(message.content, message.id)
        requests[request.request_id] = request
    assert set(requests) == set(sent)
    assert (requests["a1"].resource_uri, requests["a1"].checkpoint_id) == (URI, "cp-1")
    assert (requests[sent[1]].resource_uri, requests[sent[1]].correlation_id) == (URI2, "c2")
    assert (requests["a3"].checkpoint_id, requests["a3"].traceparent) == (None, TRACEPARENT)


def test_enqueue_sends_any_text_as_json_escapes(capsys, tmp_path, queues):
    # non-ASCII fields and a lone surrogate in an unknown field: nothing the queue service could refuse
    path = tmp_path / "requests.jsonl"
    line = json.dumps({"resourceUri": URI, "checkpointId": "Prüfpunkt-1"}, ensure_ascii=False)
    path.write_text(line[:-1] + ', "note": "\\ud800"}\n', encoding="utf-8")
    code, out, err = run(capsys, "enqueue", *queues.flags, "--file", str(path), "--json")
    assert code == 0, err
    [message] = queues.messages("requests")
    assert message.content.isascii()
    assert decode_request(message.content, message.id).checkpoint_id == "Prüfpunkt-1"


GOOD_LINE = json.dumps({"resourceUri": URI, "checkpointId": "cp-1"})


@pytest.mark.parametrize(
    ("bad_line", "named"),
    [
        (json.dumps({"resourceUri": URI + "/../vm2", "checkpointId": "cp"}), "resourceUri"),
        (json.dumps({"resourceUri": URI.replace("/machines/", "/machines/./")}), "resourceUri"),
        (json.dumps({"checkpointId": "cp-1"}), "resourceUri"),
        (json.dumps({"resourceUri": URI, "checkpointId": "c" * 257}), "checkpointId"),
        (json.dumps({"resourceUri": URI, "correlationId": 5}), "correlationId"),
        ('{"resourceUri": "' + URI + '", ', "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"resourceUri": URI, "requestId": "same"}), "repeats line 1"),
    ],
)
@pytest.mark.parametrize("envelope", ["plain", "cloudevents"])
def test_an_invalid_line_sends_nothing_and_names_line_and_field(capsys, tmp_path, queues, bad_line, named, envelope):
    first = json.dumps({"resourceUri": URI, "requestId": "same"}) if "repeats" in named else GOOD_LINE
    path = tmp_path / "requests.jsonl"
    path.write_text(f"{first}\n{bad_line}\n{GOOD_LINE}\n", encoding="utf-8")
    code, out, err = run(capsys, "enqueue", *queues.flags, "--file", str(path), "--envelope", envelope)
    assert code == 2
    assert out == ""
    assert "line 2" in err and named in err and "nothing was sent" in err
    assert "line 1:" not in err and "line 3" not in err
    assert queues.messages("requests") == []


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--resource-uri", URI + "/.."], "--resource-uri"),
        (["--resource-uri", URI, "--checkpoint-id", "x" * 257], "--checkpoint-id"),
        (["--resource-uri", URI, "--request-id", "bad\tid"], "--request-id"),
        (["--resource-uri", "/subscriptions/s?x=1"], "--resource-uri"),
    ],
)
def test_invalid_flags_send_nothing(capsys, queues, flags, named):
    code, out, err = run(capsys, "enqueue", *queues.flags, *flags)
    assert (code, out) == (2, "")
    assert named in err
    assert queues.messages("requests") == []


def test_an_invalid_traceparent_is_a_warning_not_a_rejection(capsys, queues):
    code, out, err = run(capsys, "enqueue", *queues.flags, "--resource-uri", URI, "--traceparent", "nonsense")
    assert code == 0
    assert "traceparent" in err and "warning" in err
    [message] = queues.messages("requests")
    assert decode_request(message.content, message.id).traceparent is None


def test_dry_run_validates_and_prints_without_sending(capsys, queues):
    code, out, _ = run(capsys, "enqueue", "--resource-uri", URI, "--request-id", "d1", "--dry-run")
    assert code == 0
    assert decode_request(out.strip(), "m").request_id == "d1"


# --- usage errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["enqueue", "--envelope", "xml", "--resource-uri", URI],
        ["enqueue", "--file", "x.jsonl", "--resource-uri", URI],
        ["enqueue"],
        ["enqueue", "--file", "/nonexistent/requests.jsonl"],
        [
            "enqueue",
            "--resource-uri",
            URI,
            "--connection-string",
            "UseDevelopmentStorage=true",
            "--requests-queue",
            "A_",
        ],
        ["enqueue", "--resource-uri", URI, "--connection-string", "x", "--account-url", "https://a.example"],
        ["enqueue", "--resource-uri", URI, "--account-url", "http://127.0.0.1:1/devstoreaccount1"],
        ["watch", "--timeout", "-1"],
        ["watch", "--until-done"],
        ["status", "--retries", "many"],
    ],
)
def test_bad_usage_exits_2(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.strip()


def test_no_storage_connection_is_bad_usage(capsys, monkeypatch):
    for name in list(os.environ):
        if name.startswith("AzureWebJobsStorage"):
            monkeypatch.delenv(name)
    code, _, err = run(capsys, "status")
    assert code == 2
    assert "--connection-string" in err and "AzureWebJobsStorage" in err


@pytest.mark.parametrize(
    "argv",
    [["status"], ["watch", "--timeout", "5"], ["enqueue", "--resource-uri", URI]],
)
def test_an_unreachable_service_exits_1(capsys, argv):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens on it once the socket is closed
    unreachable = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"QueueEndpoint=http://127.0.0.1:{port}/{ACCOUNT_NAME};"
    )
    code, _, err = run(capsys, *argv, "--connection-string", unreachable, "--retries", "0")
    assert code == 1
    assert "could not reach the queue service" in err


def test_an_identity_connection_without_a_usable_sign_in_exits_1(capsys, monkeypatch, identity):
    for name in list(os.environ):
        if name.startswith(("AZURE_", "IDENTITY_", "MSI_")):
            monkeypatch.delenv(name)
    # the managed identity is our local endpoint, which refuses the wrong secret (never the IMDS address)
    monkeypatch.setenv("IDENTITY_ENDPOINT", identity.endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-secret")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = run(capsys, "status", "--account-url", f"https://127.0.0.1:{port}", "--retries", "0")
    assert code == 1  # no token (or, signed in, no service): either way not reachable
    assert "could not get a Microsoft Entra token" in err or "could not reach" in err


# --- watch ---------------------------------------------------------------------------------------------


def test_watch_until_all_succeeded_exits_0_and_consumes(capsys, queues):
    events = queues.created("events")
    for text in (
        event("Accepted", "r1"),
        event("Accepted", "r2", URI2),
        event("Succeeded", "r1"),
        event("Succeeded", "r1"),  # delivery is at least once: printed once
        "not json\nat all \u009b2J",  # C1 CSI, a terminal escape (C0 ones are not valid in a queue message)
        json.dumps({"hello": "world"}),
        event("Succeeded", "r2", URI2),
    ):
        events.send_message(text)
    code, out, err = run(capsys, "watch", *queues.flags, "--until-done", "r1", "r2", "--timeout", "10")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 6
    assert "Accepted" in lines[0] and "r1" in lines[0] and URI in lines[0] and "checkpoint=cp-1" in lines[0]
    assert sum("Succeeded" in line for line in lines) == 2
    assert "raw message" in out and "not json\\nat all \\x9b2J" in out and '{"hello": "world"}' in out
    assert "\x9b" not in out
    assert "all 2 request(s) succeeded" in err
    assert queues.count("events") == 0


def test_watch_until_one_failed_exits_1_and_shows_the_error(capsys, queues):
    events = queues.created("events")
    error = {"code": "ResourceNotFound", "message": "The checkpoint cp-1 was not found.", "target": None}
    events.send_message(event("Succeeded", "r1"))
    events.send_message(event("Failed", "r2", URI2, error))
    code, out, err = run(capsys, "watch", *queues.flags, "--until-done", "r1", "r2", "--timeout", "10")
    assert code == 1
    [failed] = [line for line in out.splitlines() if "Failed" in line]
    assert "r2" in failed and URI2 in failed and "ResourceNotFound: The checkpoint cp-1 was not found." in failed
    assert "1 of 2 request(s) failed: r2" in err


def test_watch_json_prints_each_event_on_one_line(capsys, queues):
    events = queues.created("events")
    events.send_message(event("Accepted", "r1"))
    events.send_message("garbage")
    events.send_message(event("Failed", "r1", error={"code": "InvalidRequest", "message": "m"}))
    code, out, _ = run(capsys, "watch", *queues.flags, "--json", "--until-done", "r1", "--timeout", "10")
    assert code == 1
    documents = [json.loads(line) for line in out.splitlines()]
    assert [d.get("id") for d in documents] == ["r1:accepted", None, "r1:failed"]
    assert documents[1]["raw"] == "garbage"
    assert documents[2]["data"]["error"]["code"] == "InvalidRequest"


def test_watch_peek_leaves_events_and_reads_ids_from_enqueue_output(capsys, tmp_path, queues):
    code, out, _ = run(capsys, "enqueue", *queues.flags, "--resource-uri", URI, "--json")
    assert code == 0
    sent = tmp_path / "sent.jsonl"
    sent.write_text(out, encoding="utf-8")
    request_id = json.loads(out)["requestId"]
    events = queues.created("events")
    events.send_message(event("Accepted", request_id))
    events.send_message(event("Succeeded", request_id))

    code, out, err = run(capsys, "watch", *queues.flags, "--peek", "--until-done-file", str(sent), "--timeout", "10")
    assert code == 0, err
    assert len(out.splitlines()) == 2 and request_id in out
    assert queues.count("events") == 2  # peeked, not consumed

    plain = tmp_path / "sent.txt"
    plain.write_text(f"{request_id}\n", encoding="utf-8")
    code, _, _ = run(capsys, "watch", *queues.flags, "--peek", "--until-done-file", str(plain), "--timeout", "10")
    assert code == 0


def test_watch_timeout_exits_1_and_names_what_is_missing(capsys, queues):
    queues.created("events").send_message(event("Succeeded", "r1"))
    started = time.monotonic()
    argv = ["watch", *queues.flags, "--until-done", "r1", "never", "--timeout", "0.5", "--interval", "0.1"]
    code, out, err = run(capsys, *argv)
    assert code == 1
    assert time.monotonic() - started < 5
    assert "r1" in out
    assert "timed out" in err and "never" in err


def test_watch_without_awaited_ids_stops_at_timeout_with_0(capsys, queues):
    # the events queue does not exist yet: watch waits for the app to create it
    code, out, err = run(capsys, "watch", *queues.flags, "--timeout", "0.3", "--interval", "0.1")
    assert (code, out) == (0, "")
    assert "does not exist yet" in err


# --- status --------------------------------------------------------------------------------------------


def test_status_counts_every_queue(capsys, queues):
    for uri in (URI, URI2):
        assert run(capsys, "enqueue", *queues.flags, "--resource-uri", uri)[0] == 0
    tracking = queues.created("tracking")
    submitted = time.time() - 125
    visible = Operation("t1", URI, "https://arm/op1", "https://arm/op1", False, submitted)
    hidden = Operation("t2", URI, "https://arm/op2", "https://arm/op2", False, submitted - 1000)
    tracking.send_message(visible.to_message())
    tracking.send_message(hidden.to_message(), visibility_timeout=600)
    events = queues.created("events")
    for status in ("Accepted", "Succeeded", "Accepted"):
        events.send_message(event(status, "r1"))
    queues.created("poison").send_message(GOOD_LINE)
    queues.created("outbox").send_message(json.dumps({"attempts": 1, "event": json.loads(event("Accepted", "r1"))}))
    refused = {"reason": "HTTP 400: bad event", "event": json.loads(event("Accepted", "r2"))}
    deadletter = queues.created("deadletter")
    for _ in range(2):
        deadletter.send_message(json.dumps(refused))

    code, out, _ = run(capsys, "status", *queues.flags, "--json")
    assert code == 0
    report = json.loads(out)
    roles = ("requests", "tracking", "events", "poison", "outbox", "deadletter")
    counts = {role: report[role]["approximateMessageCount"] for role in roles}
    assert counts == {"requests": 2, "tracking": 2, "events": 3, "poison": 1, "outbox": 1, "deadletter": 2}
    oldest = report["tracking"]["oldestVisible"]
    assert oldest["peeked"] == 1  # the invisible (older) one cannot be peeked
    assert 120 <= oldest["ageSeconds"] < 160
    assert report["poison"]["queue"] == queues.names["requests"] + "-poison"

    code, out, _ = run(capsys, "status", *queues.flags)
    assert code == 0
    assert "oldest visible one" in out and "2m" in out
    for label, count in (
        ("requests waiting", 2),
        ("operations in flight", 2),
        ("events waiting", 3),
        ("events for Event Grid", 1),
        ("refused by Event Grid", 2),
    ):
        [line] = [line for line in out.splitlines() if line.startswith(label)]
        assert line.split()[-2] == str(count)


def test_status_of_queues_not_created_yet(capsys, queues):
    code, out, _ = run(capsys, "status", *queues.flags, "--json")
    assert code == 0
    report = json.loads(out)
    roles = ("requests", "tracking", "events", "poison", "outbox", "deadletter")
    assert [report[role]["exists"] for role in roles] == [False] * 6
    assert report["tracking"]["oldestVisible"] is None


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.strip() == "checkpointctl 0.1.0"
