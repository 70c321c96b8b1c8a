"""checkpointctl failed [list] (--resubmit) and poison replay (docs/cli.md) against a real Azurite."""

from __future__ import annotations

import io
import json
import sys
import time
import uuid

import pytest

from shared.events import outcome_event
from shared.request import decode_request
from tests.support.cli import URI, URI2, event, run

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ARM_MESSAGE = "The checkpoint cp-4 was not found.\nTracking id: 6c3e..."


def failure(request_id: str, code: str, message: str | None = None, **facts) -> str:
    """A Failed event as the app writes it (contract section 4)."""
    facts = {"requestId": request_id, "resourceUri": URI, "checkpointId": "cp-1", "correlationId": "c-9", **facts}
    error = {
        "code": code,
        "message": message or f"{code} happened",
        "target": None,
        "details": [],
        "additionalInfo": [],
    }
    return json.dumps(outcome_event("Failed", facts, time.time(), error))


# requestId -> (code, the Failed event): RetriesExhausted twice, OperationTimedOut, an ARM code, InvalidRequest
FAILURES = {
    "f-1": ("RetriesExhausted", failure("f-1", "RetriesExhausted", traceparent=TRACEPARENT)),
    "t-1": ("OperationTimedOut", failure("t-1", "OperationTimedOut", resourceUri=URI2, checkpointId="cp-2")),
    "f-2": ("RetriesExhausted", failure("f-2", "RetriesExhausted", correlationId="c-2")),
    "a-1": ("ResourceNotFound", failure("a-1", "ResourceNotFound", ARM_MESSAGE, checkpointId="cp-4")),
    "bad-1": ("InvalidRequest", failure("bad-1", "InvalidRequest", "checkpointId must be 1 to 256 characters long")),
}
RESUBMITTABLE = {"f-1", "t-1", "f-2", "a-1"}


@pytest.fixture
def failed_queue(queues):
    """The events queue with the failures of FAILURES among other events, one Failed event delivered twice
    and a message that is no event."""
    events = queues.created("events")
    texts = [event("Accepted", "f-1"), event("Succeeded", "ok-1"), "not an event"]
    texts += [text for _, text in FAILURES.values()] + [FAILURES["f-1"][1]]  # f-1's Failed event delivered twice
    for text in texts:
        events.send_message(text)
    return len(texts)


def sent_requests(queues) -> dict[str, object]:
    """The requests on the requests queue (taken off it), by requestId, as the app reads them."""
    found = [decode_request(message.content, message.id) for message in queues.messages("requests")]
    return {request.request_id: request for request in found}


class Terminal(io.StringIO):
    """A stdin that is a terminal, where the person types `answer`."""

    def isatty(self) -> bool:
        return True


# --- listing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", [[], ["list"]])
def test_failed_lists_the_failures_grouped_by_code(capsys, queues, failed_queue, action):
    code, out, err = run(capsys, "failed", *action, *queues.flags)
    assert (code, err) == (0, "")
    header, *counts = out.split("\n\n")[0].splitlines()
    assert header == f"5 Failed event(s) among the first {failed_queue} visible event(s) of {queues.names['events']}"
    assert [line.split()[:2] for line in counts] == [
        ["RetriesExhausted", "2"],  # the most frequent first, then by name; f-1 counted once
        ["InvalidRequest", "1"],
        ["OperationTimedOut", "1"],
        ["ResourceNotFound", "1"],
    ]
    assert "never resubmitted" in counts[1]
    sections = {part.splitlines()[0]: part.splitlines()[1:] for part in out.split("\n\n")[1:]}
    assert sections["RetriesExhausted (2)"] == [
        f"  f-1  {URI}  checkpoint=cp-1  RetriesExhausted happened",
        f"  f-2  {URI}  checkpoint=cp-1  RetriesExhausted happened",
    ]
    assert sections["OperationTimedOut (1)"] == [f"  t-1  {URI2}  checkpoint=cp-2  OperationTimedOut happened"]
    assert sections["ResourceNotFound (1)"] == [
        f"  a-1  {URI}  checkpoint=cp-4  The checkpoint cp-4 was not found. ..."
    ]
    assert list(sections) == [
        "RetriesExhausted (2)",
        "InvalidRequest (1)",
        "OperationTimedOut (1)",
        "ResourceNotFound (1)",
    ]
    assert queues.count("events") == failed_queue  # peeked: left for their consumer
    assert queues.messages("requests") == []


def test_failed_json_shape(capsys, queues, failed_queue):
    code, out, err = run(capsys, "failed", "--json", *queues.flags)
    assert (code, err) == (0, "")
    [line] = out.splitlines()
    document = json.loads(line)
    assert {key: document[key] for key in ("source", "from", "eventsRead", "failed", "limited")} == {
        "source": "peek",
        "from": queues.names["events"],
        "eventsRead": failed_queue,
        "failed": 5,
        "limited": False,
    }
    by_code = {group["code"]: group for group in document["codes"]}
    assert [group["code"] for group in document["codes"]][0] == "RetriesExhausted"
    assert {code: group["count"] for code, group in by_code.items()} == {
        "RetriesExhausted": 2,
        "OperationTimedOut": 1,
        "ResourceNotFound": 1,
        "InvalidRequest": 1,
    }
    assert {code: group["resubmittable"] for code, group in by_code.items()} == {
        "RetriesExhausted": True,
        "OperationTimedOut": True,
        "ResourceNotFound": True,
        "InvalidRequest": False,
    }
    [arm] = by_code["ResourceNotFound"]["requests"]
    assert {key: arm[key] for key in ("requestId", "resourceUri", "checkpointId", "correlationId", "message")} == {
        "requestId": "a-1",
        "resourceUri": URI,
        "checkpointId": "cp-4",
        "correlationId": "c-9",
        "message": ARM_MESSAGE,  # whole, for machines
    }
    assert arm["time"].endswith("Z") and arm["messageId"]
    assert [r["requestId"] for r in by_code["RetriesExhausted"]["requests"]] == ["f-1", "f-2"]


def test_failed_code_filter_and_limit(capsys, queues, failed_queue):
    code, out, _ = run(
        capsys, "failed", "--code", "OperationTimedOut", "--code", "ResourceNotFound", "--json", *queues.flags
    )
    assert code == 0
    document = json.loads(out)
    assert sorted(group["code"] for group in document["codes"]) == ["OperationTimedOut", "ResourceNotFound"]
    assert document["failed"] == 2

    code, out, _ = run(capsys, "failed", "list", "--code", "RetriesExhausted", *queues.flags)
    assert code == 0
    assert out.splitlines()[0].startswith("2 Failed event(s) with code RetriesExhausted among")
    assert "t-1" not in out and "bad-1" not in out

    code, out, _ = run(capsys, "failed", "--limit", "2", "--json", *queues.flags)
    document = json.loads(out)
    assert (document["failed"], document["limited"]) == (2, True)
    # the first two read (f-1, t-1), grouped: a tie in count goes by code
    assert [(g["code"], [r["requestId"] for r in g["requests"]]) for g in document["codes"]] == [
        ("OperationTimedOut", ["t-1"]),
        ("RetriesExhausted", ["f-1"]),
    ]


def test_failed_scan_reads_past_the_first_32_and_leaves_everything(capsys, queues):
    events = queues.created("events")
    for number in range(34):
        events.send_message(event("Accepted", f"r{number}"))
    events.send_message(failure("late-1", "OperationTimedOut"))

    code, out, _ = run(capsys, "failed", *queues.flags)
    assert code == 0
    assert out.startswith("0 Failed event(s) among the first 32 visible") and "--scan" in out

    code, out, _ = run(capsys, "failed", "--scan", "--json", *queues.flags)
    assert code == 0
    document = json.loads(out)
    assert (document["source"], document["eventsRead"], document["failed"]) == ("scan", 35, 1)
    assert len(list(events.peek_messages(max_messages=32))) == 32  # what was scanned is visible again
    assert queues.count("events") == 35


def test_failed_from_a_saved_watch_output(capsys, tmp_path, queues):
    saved = tmp_path / "events.jsonl"
    saved.write_text("\n".join([event("Accepted", "w-1"), FAILURES["t-1"][1], "", FAILURES["bad-1"][1]]) + "\n")
    code, out, _ = run(capsys, "failed", "--events-file", str(saved), *queues.flags)
    assert code == 0
    assert out.splitlines()[0] == f"2 Failed event(s) among the 3 event(s) in {saved}"


def test_failed_of_an_events_queue_not_created_yet(capsys, queues):
    code, out, err = run(capsys, "failed", *queues.flags)
    assert (code, out) == (0, "")
    assert "does not exist" in err
    code, out, _ = run(capsys, "failed", "--json", *queues.flags)
    assert code == 0 and json.loads(out)["failed"] == 0


# --- --resubmit ------------------------------------------------------------------------------------------


def assert_resubmitted(queues, out: str, wanted: set[str]) -> dict[str, object]:
    """The requests queue holds the rebuilt requests of `wanted`, under the new requestIds printed."""
    new_ids = out.split()
    requests = sent_requests(queues)
    assert sorted(requests) == sorted(new_ids) and len(new_ids) == len(wanted)
    assert not set(new_ids) & set(FAILURES)  # new requests: each first try had its terminal event
    by_checkpoint = {(r.resource_uri, r.checkpoint_id, r.correlation_id) for r in requests.values()}
    facts = {"f-1": (URI, "cp-1", "c-9"), "f-2": (URI, "cp-1", "c-2"), "t-1": (URI2, "cp-2", "c-9")}
    facts["a-1"] = (URI, "cp-4", "c-9")
    assert by_checkpoint == {facts[request_id] for request_id in wanted}
    for new_id in new_ids:
        uuid.UUID(new_id)
    return requests


def test_resubmit_with_yes_sends_every_request_but_the_invalid_ones(capsys, queues, failed_queue):
    code, out, err = run(capsys, "failed", "--resubmit", "--yes", *queues.flags)
    assert code == 0, err
    requests = assert_resubmitted(queues, out, RESUBMITTABLE)
    [traced] = [r for r in requests.values() if r.traceparent]
    assert traced.traceparent == TRACEPARENT  # the first try's trace goes on
    # the listing's counts go to stderr, then the plan: stdout holds the new requestIds only
    header, *counts = err.split("\n\n")[0].splitlines()
    assert header.startswith("5 Failed event(s) among") and counts[0].split() == ["RetriesExhausted", "2"]
    assert "happened" not in err  # the plan names the requests, the listing does not again
    assert "refused, not sent: 1 InvalidRequest failure(s)" in err and "bad-1" in err
    assert "would send 4 request(s)" in err and "resubmitted 4 request(s)" in err
    assert "[y/N]" not in err
    assert queues.count("events") == failed_queue


def test_resubmit_of_chosen_codes_with_json_records(capsys, queues, failed_queue):
    argv = ["failed", "list", "--resubmit", "--code", "RetriesExhausted", "--code", "InvalidRequest", "--yes", "--json"]
    code, out, err = run(capsys, *argv, *queues.flags)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert sorted(record["fromRequestId"] for record in records) == ["f-1", "f-2"]
    assert {record["queue"] for record in records} == {queues.names["requests"]}
    assert_resubmitted(queues, "\n".join(record["requestId"] for record in records), {"f-1", "f-2"})


def test_resubmit_dry_run_prints_the_messages_and_sends_nothing(capsys, queues, failed_queue):
    code, out, err = run(capsys, "failed", "--resubmit", "--dry-run", "--code", "OperationTimedOut", *queues.flags)
    assert code == 0, err
    request = decode_request(out.strip(), "m")
    assert (request.resource_uri, request.checkpoint_id, request.request_id != "t-1") == (URI2, "cp-2", True)
    assert "nothing was sent" in err
    assert queues.messages("requests") == []


def test_resubmit_without_yes_and_without_a_terminal_is_refused(capsys, queues, failed_queue):
    code, out, err = run(capsys, "failed", "--resubmit", *queues.flags)  # pytest's stdin is no terminal
    assert (code, out) == (2, "")
    assert "--yes" in err and "not a terminal" in err
    assert queues.messages("requests") == []


@pytest.mark.parametrize(("answer", "expected_code"), [("y\n", 0), ("yes\n", 0), ("n\n", 1), ("\n", 1), ("", 1)])
def test_resubmit_asks_on_a_terminal(capsys, monkeypatch, queues, failed_queue, answer, expected_code):
    monkeypatch.setattr(sys, "stdin", Terminal(answer))
    code, out, err = run(capsys, "failed", "--resubmit", "--code", "ResourceNotFound", *queues.flags)
    assert code == expected_code, err
    assert "would send 1 request(s)" in err and "a-1" in err
    assert "Resubmit 1 request(s)? [y/N] " in err
    if expected_code == 0:
        assert_resubmitted(queues, out, {"a-1"})
    else:
        assert out == "" and "nothing was sent" in err
        assert queues.messages("requests") == []


def test_resubmit_with_only_invalid_requests_sends_nothing(capsys, queues, failed_queue):
    code, out, err = run(capsys, "failed", "--resubmit", "--code", "InvalidRequest", "--yes", *queues.flags)
    assert (code, out) == (0, "")
    assert "nothing to resubmit" in err and "bad-1" in err
    assert queues.messages("requests") == []


# --- poison replay ---------------------------------------------------------------------------------------


def test_poison_replay_is_poison_resubmit(capsys, queues):
    text = json.dumps({"resourceUri": URI, "checkpointId": "cp-1", "requestId": "p-1"})
    message_id = queues.created("poison").send_message(text).id

    code, out, err = run(capsys, "poison", "replay", "--all", "--dry-run", *queues.flags)
    assert code == 0, err
    assert out.startswith(f"would move {message_id}") and queues.count("poison") == 1

    code, out, err = run(capsys, "poison", "replay", "--message-id", message_id, "--json", *queues.flags)
    assert code == 0, err
    assert json.loads(out)["fromMessageId"] == message_id
    assert [m.content for m in queues.messages("requests")] == [text]
    assert queues.messages("poison") == []

    code, out, _ = run(capsys, "poison", "--help")
    assert code == 0 and "resubmit (replay)" in out
    code, out, _ = run(capsys, "poison", "replay", "--help")
    assert code == 0 and "`poison replay` is another name for `poison resubmit`" in " ".join(out.split())


# --- usage -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["failed", "--limit", "0"],
        ["failed", "list", "--limit", "x"],
        ["failed", "--code", ""],
        ["failed", "--code", "a\tb"],
        ["failed", "--scan", "--events-file", "f"],
        ["failed", "--yes"],
        ["failed", "--dry-run"],
        ["failed", "--resubmit"],
        ["failed", "--resubmit", "--events-file", "-"],
        ["failed", "--resubmit", "--yes", "--events-file", "/nonexistent/events.jsonl"],
        ["failed", "unknown-action"],
        ["poison", "replay"],
        ["poison", "replay", "--all", "--message-id", "x"],
    ],
)
def test_bad_usage_exits_2_before_anything_is_sent(capsys, queues, failed_queue, argv):
    code, out, err = run(capsys, *argv, *queues.flags)
    assert (code, out) == (2, "")
    assert err.strip()
    assert queues.messages("requests") == []
    assert queues.count("events") == failed_queue


@pytest.mark.parametrize("command", [["failed"], ["failed", "list"], ["poison", "replay"]])
def test_each_new_command_has_help_with_examples(capsys, command):
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0
    assert "examples:" in out and f"python -m checkpointctl {' '.join(command)}" in out
