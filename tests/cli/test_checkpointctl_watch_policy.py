"""checkpointctl watch with retention policies (docs/cli.md "watch", docs/policies.md "The closing events")
against a real Azurite: the policy's closing events shown, `--until-done` with a policy's requestId, and
`failed` (list, resubmit) leaving a policy's Failed event alone."""

from __future__ import annotations

import json
import re
import time

import pytest

from shared.events import outcome_event
from shared.policy import COMPLETED, FAILED, Policy, policy_event
from tests.support.cli import URI, URI2, event, run
from tests.support.policy import assert_valid

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
NOT_FOUND = {
    "code": "ResourceNotFound",
    "message": "The Resource 'Microsoft.ScVmm/virtualMachineInstances/default' under resource group 'rg1' was not found.",
    "target": None,
    "details": [],
    "additionalInfo": [],
}


def closing(outcome: str, request_id: str, uri: str = URI, policy: Policy | None = None, **lists) -> dict:
    """A policy's closing event as the app builds it (shared.policy.policy_event), checked against its schema."""
    facts = {"requestId": request_id, "resourceUri": uri, "correlationId": "change-1300", "traceparent": TRACEPARENT}
    if outcome == FAILED:
        lists.setdefault("error", NOT_FOUND)
    built = policy_event(outcome, facts, policy or Policy(keep_latest=2), time.time(), **lists)
    assert_valid(built, outcome)
    return built


def deletion(status: str, request_id: str, checkpoint_id: str, error: dict | None = None) -> str:
    """One of a policy's own deletion events: requestId `<policy requestId>/<checkpointID>`."""
    facts = {"requestId": request_id, "resourceUri": URI, "checkpointId": checkpoint_id, "correlationId": "change-1300"}
    return json.dumps(outcome_event(status, facts | {"submittedAt": time.time()}, time.time(), error))


def send(queues, *texts) -> None:
    events = queues.created("events")
    for text in texts:
        events.send_message(text if isinstance(text, str) else json.dumps(text))


def watch(capsys, queues, *argv: str) -> tuple[int, str, str]:
    return run(capsys, "watch", *queues.flags, *argv)


# --- showing the closing events ---------------------------------------------------------------------------


def test_a_completed_policy_ends_the_wait_with_0_and_its_deletions_are_shown(capsys, queues):
    done = closing(COMPLETED, "p-7", deleted=["cp-1", "cp-2", "cp-3"], kept=["cp-4", "cp-5"])
    send(
        queues,
        deletion("Accepted", "p-7/cp-1", "cp-1"),
        deletion("Succeeded", "p-7/cp-1", "cp-1"),
        deletion("Succeeded", "p-7/cp-2", "cp-2"),
        deletion("Succeeded", "p-7/cp-3", "cp-3"),
        done,
        done,  # delivery is at least once: a repeat after the wait ended is left on the queue
        event("Succeeded", "later"),
    )
    code, out, err = watch(capsys, queues, "--until-done", "p-7", "--timeout", "10")
    assert code == 0, err
    *deletions, last = out.splitlines()
    assert len(deletions) == 4 and all("p-7/cp-" in line and "raw message" not in line for line in deletions)
    assert last.split("  ") == [
        done["time"],
        "Completed",
        "p-7",
        URI,
        "keepLatest=2",
        "deleted 3, kept 2, failed 0, skipped 0",
    ]
    assert "all 1 request(s) succeeded" in err
    assert queues.count("events") == 2  # read up to the closing event, the rest released


def test_the_policys_own_deletions_do_not_end_the_wait(capsys, queues):
    send(queues, deletion("Succeeded", "p-7/cp-1", "cp-1"), deletion("Failed", "p-7/cp-2", "cp-2", NOT_FOUND))
    argv = ["--until-done", "p-7", "--timeout", "0.5", "--interval", "0.1"]
    code, out, err = watch(capsys, queues, *argv)
    assert code == 1
    assert len(out.splitlines()) == 2 and "p-7/cp-1" in out and "p-7/cp-2" in out
    assert "failed:" not in err  # a deletion of the policy failing is not the policy's end
    assert "timed out" in err and "no outcome yet for 1 request(s): p-7" in err


def test_a_completed_policy_with_failed_deletions_exits_1(capsys, queues):
    done = closing(COMPLETED, "p-8", deleted=["cp-1"], failed=["cp-2"], skipped=["cp-3"], kept=["cp-4"])
    send(queues, deletion("Failed", "p-8/cp-2", "cp-2", NOT_FOUND), done, event("Succeeded", "r1"))
    code, out, err = watch(capsys, queues, "--until-done", "p-8", "r1", "--timeout", "10")
    assert code == 1
    assert out.splitlines()[1].endswith("deleted 1, kept 1, failed 1, skipped 1")
    assert "1 of 2 request(s) failed: p-8 (policy Completed with 1 failed deletion(s))" in err


def test_a_failed_policy_exits_1_and_shows_the_error(capsys, queues):
    failed = closing(FAILED, "p-9", URI2, Policy(name_pattern="nightly-*"))
    send(queues, failed)
    code, out, err = watch(capsys, queues, "--until-done", "p-9", "--timeout", "10")
    assert code == 1
    [line] = out.splitlines()
    assert re.split(" {2,}", line) == [
        failed["time"],
        "Failed",
        "p-9",
        URI2,
        "namePattern=nightly-*",
        f"error ResourceNotFound: {NOT_FOUND['message']}",
    ]
    assert "1 of 1 request(s) failed: p-9 (policy Failed)" in err


def test_a_dry_run_says_what_it_would_have_done_and_ends_well(capsys, queues):
    dry = closing(COMPLETED, "p-dry", policy=Policy(keep_latest=1, dry_run=True), deleted=["cp-1"], kept=["cp-2"])
    send(queues, dry)
    code, out, err = watch(capsys, queues, "--peek", "--until-done", "p-dry", "--timeout", "10")
    assert code == 0, err
    assert out.rstrip("\n").endswith("keepLatest=1  dry run: would have deleted 1, kept 1, failed 0, skipped 0")
    assert queues.count("events") == 1  # peeked, not consumed


def test_json_prints_the_policy_events_as_they_are(capsys, queues):
    done = closing(COMPLETED, "p-7", deleted=["cp-1"], kept=["cp-2"])
    failed = closing(FAILED, "p-9")
    send(queues, deletion("Succeeded", "p-7/cp-1", "cp-1"), done, failed)
    code, out, _ = watch(capsys, queues, "--json", "--until-done", "p-7", "p-9", "--timeout", "10")
    assert code == 1
    documents = [json.loads(line) for line in out.splitlines()]
    assert documents[1:] == [done, failed]
    assert documents[0]["id"] == "p-7/cp-1:succeeded"


@pytest.mark.parametrize(
    ("policy_outcome", "deletion_status", "expected"),
    [(COMPLETED, "Succeeded", 0), (COMPLETED, "Failed", 1), (FAILED, "Succeeded", 1)],
)
def test_policies_and_deletions_awaited_together(capsys, tmp_path, queues, policy_outcome, deletion_status, expected):
    error = NOT_FOUND if deletion_status == "Failed" else None
    send(queues, event(deletion_status, "r1", error=error), closing(policy_outcome, "p-7"))
    sent = tmp_path / "sent.jsonl"  # enqueue --json's output for a single deletion and a policy
    sent.write_text('{"requestId": "r1"}\n{"requestId": "p-7"}\n', encoding="utf-8")
    code, out, err = watch(capsys, queues, "--until-done-file", str(sent), "--timeout", "10")
    assert code == expected, err
    assert len(out.splitlines()) == 2
    assert ("all 2 request(s) succeeded" in err) == (expected == 0)


def test_an_invalid_policy_request_ends_at_its_deletion_failed_event(capsys, queues):
    # an invalid policy request is answered by an ordinary ScVmm.CheckpointDelete.Failed (InvalidRequest)
    invalid = {"code": "InvalidRequest", "message": "policy.keepLatest must be an integer", "target": "policy"}
    send(queues, event("Failed", "p-bad", error=invalid))
    code, out, err = watch(capsys, queues, "--until-done", "p-bad", "--timeout", "10")
    assert code == 1
    assert "InvalidRequest" in out and "1 of 1 request(s) failed: p-bad" in err


def test_a_policy_event_from_a_queue_is_shown_with_control_characters_escaped(capsys, queues):
    odd = closing(COMPLETED, "p-7", kept=["cp-1"])
    odd["data"]["policy"] = {"namePattern": "a\u009bb"}
    odd["data"]["deleted"] = "not a list"
    send(queues, odd)
    code, out, _ = watch(capsys, queues, "--until-done", "p-7", "--timeout", "10")
    assert code == 0
    assert "namePattern=a\\x9bb" in out and "\x9b" not in out and "deleted ?, kept 1" in out


# --- failed (list, resubmit) leave a policy's Failed event alone -------------------------------------------


@pytest.fixture
def policy_failures(queues):
    """A policy's Failed event beside one Failed deletion of its own (an ordinary failure)."""
    send(queues, closing(FAILED, "p-9"), deletion("Failed", "p-7/cp-2", "cp-2", NOT_FOUND))


def test_failed_list_ignores_a_policys_failed_event(capsys, queues, policy_failures):
    code, out, err = run(capsys, "failed", *queues.flags, "--json")
    assert (code, err) == (0, "")
    listing = json.loads(out)
    assert (listing["eventsRead"], listing["failed"]) == (2, 1)
    [group] = listing["codes"]
    assert [r["requestId"] for r in group["requests"]] == ["p-7/cp-2"]


def test_failed_resubmit_refuses_a_policys_requestid(capsys, queues, policy_failures):
    code, out, err = run(capsys, "failed", "resubmit", "p-9", *queues.flags, "--dry-run")
    assert (code, out) == (1, "")
    assert "no Failed event for requestId p-9" in err


def test_failed_list_from_a_watch_json_file_ignores_a_policys_failed_event(capsys, tmp_path, queues):
    saved = tmp_path / "events.jsonl"
    saved.write_text(json.dumps(closing(FAILED, "p-9")) + "\n", encoding="utf-8")
    code, out, err = run(capsys, "failed", *queues.flags, "--events-file", str(saved), "--json")
    assert (code, err) == (0, "")
    assert (json.loads(out)["eventsRead"], json.loads(out)["failed"]) == (1, 0)
