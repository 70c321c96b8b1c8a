"""checkpointctl poison list|resubmit and failed resubmit (docs/cli.md) against a real Azurite."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest

from shared.events import outcome_event
from shared.request import decode_request
from tests.support.cli import URI, URI2, event, run

PLAIN = json.dumps({"resourceUri": URI, "checkpointId": "cp-1", "requestId": "p-1", "correlationId": "c-1"})
EVENTGRID_BASE64 = base64.b64encode(
    json.dumps(
        {
            "id": "eg-1",
            "eventType": "ScVmm.CheckpointDelete.Requested",
            "subject": URI2,
            "eventTime": "2026-05-04T10:00:00Z",
            "data": {"resourceUri": URI2, "checkpointId": "cp-2"},
        }
    ).encode()
).decode()
UNDECODABLE = "this is not json \u00e9"
NO_REQUEST_ID = json.dumps({"resourceUri": URI, "checkpointId": "cp-3"})


def poison_messages(queues, *texts: str) -> dict[str, str]:
    """Put `texts` on the poison queue; {text: message id}."""
    client = queues.created("poison")
    return {text: client.send_message(text).id for text in texts}


def texts(queues, role: str) -> list[str]:
    return sorted(message.content for message in queues.messages(role))


def failed_event(request_id: str, code: str = "RetriesExhausted", **facts) -> str:
    facts = {"requestId": request_id, "resourceUri": URI, "checkpointId": "cp-1", "correlationId": "c-9", **facts}
    error = {"code": code, "message": f"{code} happened", "target": None, "details": [], "additionalInfo": []}
    return json.dumps(outcome_event("Failed", facts, time.time(), error))


# --- poison list -----------------------------------------------------------------------------------------


def test_poison_list_decodes_plain_base64_and_shows_undecodable_ones(capsys, queues):
    ids = poison_messages(queues, PLAIN, EVENTGRID_BASE64, UNDECODABLE)

    code, out, err = run(capsys, "poison", "list", *queues.flags)
    assert code == 0, err
    header, *lines = out.splitlines()
    assert queues.names["poison"] in header and "3 visible" in header
    by_id = {line.split()[0]: line for line in lines}
    assert set(by_id) == set(ids.values())
    plain = by_id[ids[PLAIN]]
    assert "p-1" in plain and URI in plain and "checkpoint=cp-1" in plain and "correlation=c-1" in plain
    assert "inserted 20" in plain and "dequeue count 0" in plain
    assert "eg-1" in by_id[ids[EVENTGRID_BASE64]] and URI2 in by_id[ids[EVENTGRID_BASE64]]
    assert "undecodable" in by_id[ids[UNDECODABLE]] and "this is not json" in by_id[ids[UNDECODABLE]]

    code, out, _ = run(capsys, "poison", "list", *queues.flags, "--json")
    assert code == 0
    records = {record["messageId"]: record for record in map(json.loads, out.splitlines())}
    assert records[ids[PLAIN]]["request"] == {
        "requestId": "p-1",
        "resourceUri": URI,
        "checkpointId": "cp-1",
        "correlationId": "c-1",
        "traceparent": None,
    }
    assert records[ids[EVENTGRID_BASE64]]["request"]["requestId"] == "eg-1"
    assert records[ids[EVENTGRID_BASE64]]["text"] == EVENTGRID_BASE64
    undecodable = records[ids[UNDECODABLE]]
    assert undecodable["request"] is None and "not valid JSON" in undecodable["problem"]
    assert undecodable["text"] == UNDECODABLE

    code, out, _ = run(capsys, "poison", "list", *queues.flags, "--limit", "1", "--json")
    assert (code, len(out.splitlines())) == (0, 1)
    assert queues.count("poison") == 3  # peeked, never received or deleted


def test_poison_list_of_a_queue_not_created_yet(capsys, queues):
    code, out, err = run(capsys, "poison", "list", *queues.flags)
    assert (code, out) == (0, "")
    assert "does not exist" in err


# --- poison resubmit -------------------------------------------------------------------------------------


def test_poison_resubmit_all_moves_the_original_text_and_leaves_undecodable_ones(capsys, queues):
    ids = poison_messages(queues, PLAIN, EVENTGRID_BASE64, UNDECODABLE, NO_REQUEST_ID)

    code, out, err = run(capsys, "poison", "resubmit", *queues.flags, "--all", "--json")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["fromMessageId"] for r in records) == sorted(
        ids[t] for t in (PLAIN, EVENTGRID_BASE64, NO_REQUEST_ID)
    )
    assert "left in the poison queue" in err and ids[UNDECODABLE] in err and "moved 3 message(s)" in err

    moved = {message.id: message.content for message in queues.messages("requests")}
    assert sorted(moved.values()) == sorted([PLAIN, EVENTGRID_BASE64, NO_REQUEST_ID])  # the text as it was
    for record in records:  # the requestId the app reads from the moved message, as printed
        assert decode_request(moved[record["messageId"]], record["messageId"]).request_id == record["requestId"]
    assert {r["requestId"] for r in records} >= {"p-1", "eg-1"}
    assert [m.content for m in queues.client("poison").peek_messages()] == [UNDECODABLE]  # visible again at once


def test_poison_resubmit_named_messages_only(capsys, queues):
    ids = poison_messages(queues, PLAIN, EVENTGRID_BASE64, NO_REQUEST_ID)

    code, out, err = run(capsys, "poison", "resubmit", *queues.flags, "--message-id", ids[EVENTGRID_BASE64])
    assert code == 0, err
    [line] = out.splitlines()
    assert line.startswith(f"moved {ids[EVENTGRID_BASE64]} -> ") and "eg-1" in line
    assert texts(queues, "requests") == [EVENTGRID_BASE64]
    assert texts(queues, "poison") == sorted([PLAIN, NO_REQUEST_ID])


@pytest.mark.parametrize(
    ("named", "expected_code", "said"),
    [(["not-there"], 1, "not-there is not in the poison queue"), ([UNDECODABLE], 2, "would fail again")],
)
def test_poison_resubmit_refuses_a_missing_or_undecodable_message_and_moves_nothing(
    capsys, queues, named, expected_code, said
):
    ids = poison_messages(queues, PLAIN, UNDECODABLE)
    chosen = [ids.get(name, name) for name in named]
    code, out, err = run(capsys, "poison", "resubmit", *queues.flags, "--message-id", ids[PLAIN], *chosen)
    assert (code, out) == (expected_code, "")
    assert said in err and "nothing was moved" in err
    assert queues.messages("requests") == []
    assert texts(queues, "poison") == sorted([PLAIN, UNDECODABLE])  # both visible again, not lost


@pytest.mark.parametrize("which", [["--all"], ["--message-id", "PLAIN"]])
def test_poison_resubmit_dry_run_moves_nothing(capsys, queues, which):
    ids = poison_messages(queues, PLAIN, UNDECODABLE)
    which = [ids[PLAIN] if flag == "PLAIN" else flag for flag in which]
    code, out, err = run(capsys, "poison", "resubmit", *queues.flags, *which, "--dry-run")
    assert code == 0, err
    [line] = out.splitlines()
    assert line.startswith(f"would move {ids[PLAIN]}") and "p-1" in line
    assert "nothing was moved" in err
    assert queues.count("poison") == 2
    assert queues.messages("requests") == []


# --- failed resubmit -------------------------------------------------------------------------------------


def test_failed_resubmit_enqueues_the_request_again(capsys, queues):
    events = queues.created("events")
    events.send_message(event("Succeeded", "other"))
    events.send_message(failed_event("f-1"))

    code, out, err = run(capsys, "failed", "resubmit", "f-1", *queues.flags)
    assert code == 0, err
    new_id = out.strip()
    uuid.UUID(new_id)  # a new request: f-1 already has its terminal event
    assert "found:" in err and "RetriesExhausted" in err
    [message] = queues.messages("requests")
    request = decode_request(message.content, message.id)
    assert (request.request_id, request.resource_uri) == (new_id, URI)
    assert (request.checkpoint_id, request.correlation_id) == ("cp-1", "c-9")
    assert queues.count("events") == 2  # peeked, left for their consumer

    code, out, err = run(capsys, "failed", "resubmit", "f-1", *queues.flags, "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["requestId"] != new_id
    [message] = queues.messages("requests")
    assert message.id == record["messageId"]
    assert decode_request(message.content, message.id).request_id == record["requestId"]


def test_failed_resubmit_refuses_an_invalid_request_failure(capsys, queues):
    queues.created("events").send_message(failed_event("bad-1", "InvalidRequest"))
    code, out, err = run(capsys, "failed", "resubmit", "bad-1", *queues.flags)
    assert (code, out) == (2, "")
    assert "InvalidRequest" in err and "would fail again" in err and "nothing was sent" in err
    assert queues.messages("requests") == []


def test_failed_resubmit_not_found_exits_1_and_scan_looks_past_the_first_32(capsys, queues):
    events = queues.created("events")
    for number in range(40):
        events.send_message(event("Accepted", f"r{number}"))
    events.send_message(failed_event("late-1"))

    code, out, err = run(capsys, "failed", "resubmit", "late-1", *queues.flags)
    assert (code, out) == (1, "")
    assert "no Failed event" in err and "--scan" in err

    code, out, err = run(capsys, "failed", "resubmit", "late-1", *queues.flags, "--scan")
    assert code == 0, err
    uuid.UUID(out.strip())
    assert len(list(events.peek_messages(max_messages=32))) == 32  # scanned ones were made visible again
    assert queues.count("events") == 41


def test_failed_resubmit_from_a_saved_watch_output(capsys, tmp_path, queues):
    saved = tmp_path / "events.jsonl"
    saved.write_text(event("Accepted", "w-1") + "\n\n" + failed_event("w-1", correlationId="c-w") + "\n")
    code, out, err = run(capsys, "failed", "resubmit", "w-1", *queues.flags, "--events-file", str(saved), "--dry-run")
    assert code == 0, err
    request = decode_request(out.strip(), "m")
    assert request.request_id != "w-1" and request.correlation_id == "c-w"
    assert queues.messages("requests") == []


# --- usage -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["poison"],
        ["failed", "--limit", "0"],  # `failed` alone is `failed list` (test_checkpointctl_failed.py)
        ["poison", "list", "--limit", "0"],
        ["poison", "list", "--limit", "33"],
        ["poison", "resubmit"],
        ["poison", "resubmit", "--all", "--message-id", "x"],
        ["poison", "resubmit", "--message-id", ""],
        ["failed", "resubmit"],
        ["failed", "resubmit", ""],
        ["failed", "resubmit", "x\ty"],
        ["failed", "resubmit", "x", "--scan", "--events-file", "f"],
        ["failed", "resubmit", "x", "--events-file", "/nonexistent/events.jsonl"],
    ],
)
def test_bad_usage_exits_2_before_anything_is_sent(capsys, queues, argv):
    code, out, err = run(capsys, *argv, *queues.flags)
    assert (code, out) == (2, "")
    assert err.strip()
    assert queues.messages("requests") == []


@pytest.mark.parametrize("command", [["poison", "list"], ["poison", "resubmit"], ["failed", "resubmit"]])
def test_each_new_command_has_help_with_examples(capsys, command):
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0
    assert "examples:" in out and f"python -m checkpointctl {' '.join(command)}" in out
