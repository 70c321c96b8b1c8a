"""Verification (contract section 5, issue 7 item 4), end to end: where an ARM answer alone could
mislead, the VM instance says whether the checkpoint still exists. Each test names, in a comment,
what would fail without the behaviour it proves."""

from __future__ import annotations

import contextlib
import json

import pytest
import requests
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

from localdev.arm_emulator import Fault, Scenario
from tests.support.app_harness import TERMINAL, new_resource_uri
from tests.support.events import assert_event_shape, one_request, types

ABSENT = "checkpointAbsent"


def request_for(cp: str | None, rid: str, uri: str | None = None) -> dict:
    request = {"resourceUri": uri or new_resource_uri(), "requestId": rid}
    if cp is not None:
        request["checkpointId"] = cp
    return request


def instance_reads(arm) -> list:
    return arm.requests(kind="instance")


def assert_one_terminal(events: list[dict]) -> dict:
    """At most one terminal type for the request (repeats of the same id allowed), and return it."""
    terminal = [e for e in events if e["type"] in TERMINAL]
    assert len({e["type"] for e in terminal}) == 1, types(events)
    return terminal[0]


def assert_verified(event: dict, request: dict, arm_error_code: str | None) -> None:
    assert_event_shape(event, request, "Succeeded")
    assert event["data"]["verification"] == ABSENT
    if arm_error_code is None:
        assert "armError" not in event["data"]
    else:
        assert event["data"]["armError"]["code"] == arm_error_code


# ---------------------------------------------------------------- 1, 2: a redelivered request


def test_redelivered_request_whose_checkpoint_is_gone_is_verified_and_never_posted(app, arm):
    request = request_for("cp-gone", "r-redelivered-gone")
    arm.set_checkpoints(request["resourceUri"], ["cp-root"])
    app.services.submitter.handle(json.dumps(request), "m-redelivered-gone", 2)
    events = app.events_of(request["requestId"])
    assert types(events) == ["Succeeded"]
    assert_verified(events[0], request, None)
    # without verification first, the redelivery would POST again (and meet a 404)
    assert arm.requests(kind="submit") == []
    assert len(instance_reads(arm)) == 1


def test_redelivered_request_whose_checkpoint_is_there_is_posted_and_ends_as_usual(app, arm):
    request = request_for("cp-there", "r-redelivered-there")
    arm.set_checkpoints(request["resourceUri"], ["cp-root", "cp-there"])
    assert app.services.submitter.handle(json.dumps(request), "m-redelivered-there", 2) == "accepted"
    events = app.run([request["requestId"]])[request["requestId"]]
    assert types(events) == ["Accepted", "Succeeded"]
    assert_event_shape(events[1], request, "Succeeded")
    assert "verification" not in events[1]["data"]  # polled normally: the instance did not decide
    # a redelivery that skipped the POST after reading the instance would leave the checkpoint
    assert len(arm.requests(kind="submit")) == 1
    assert not arm.checkpoint_exists(request["resourceUri"], "cp-there")


# ---------------------------------------------------------------- 3: 404 to the POST


def test_404_for_a_checkpoint_the_instance_no_longer_lists_is_verified_success(app, arm):
    request = request_for("cp-merged", "r-404-gone")
    arm.set_checkpoints(request["resourceUri"], ["cp-root"])  # the emulator answers 404 NotFound itself
    events = one_request(app, request)
    assert types(events) == ["Succeeded"]
    # without verification, a 404 would be Failed with ARM's NotFound
    assert_verified(events[0], request, "NotFound")
    assert events[0]["data"]["armError"]["target"] == "cp-merged"
    assert len(arm.requests(kind="submit")) == 1


def test_404_for_a_checkpoint_the_instance_still_lists_is_failed_with_arms_error(app, arm):
    request = request_for("cp-listed", "r-404-listed")
    arm.set_checkpoints(request["resourceUri"], ["cp-root", "cp-listed"])
    arm.default = Scenario(submit=Fault.arm_error(404, "CheckpointNotFound", "not found", target="id"))
    events = one_request(app, request)
    assert types(events) == ["Failed"]
    assert_event_shape(events[0], request, "Failed")
    error = events[0]["data"]["error"]
    assert (error["code"], error["message"], error["target"]) == ("CheckpointNotFound", "not found", "id")
    assert "verification" not in events[0]["data"]
    # a verification that ignored the instance's answer would not have read it / would claim success
    assert [r.status for r in instance_reads(arm)] == [200]
    assert arm.checkpoint_exists(request["resourceUri"], "cp-listed")


def test_404_on_an_undefined_instance_keeps_the_plain_outcome(app, arm):
    request = request_for("cp-x", "r-404-undefined")
    arm.default = Scenario(submit=Fault.arm_error(404, "CheckpointNotFound", "not found"))
    events = one_request(app, request)
    assert types(events) == ["Failed"]
    assert_event_shape(events[0], request, "Failed")
    # an instance read failing for good (404) must not count as "checkpoint absent", nor be retried
    assert events[0]["data"]["error"]["code"] == "CheckpointNotFound"
    assert "verification" not in events[0]["data"]
    assert [r.status for r in instance_reads(arm)] == [404]
    assert len(arm.requests(kind="submit")) == 1


# ---------------------------------------------------------------- 4: a lost answer to an accepted POST


@pytest.mark.parametrize("seconds", [1.0, 0.0], ids=["operation-runs", "operation-done-at-once"])
def test_lost_answer_to_an_accepted_deletion_ends_in_one_succeeded(app, arm, seconds):
    request = request_for("cp-lost", f"r-lost-{seconds}")
    arm.set_checkpoints(request["resourceUri"], ["cp-root", "cp-lost"])
    arm.one_job_per_vm = True
    arm.default = Scenario(submit_faults=[Fault.lost()], done_after_seconds=seconds)
    events = one_request(app, request, timeout=30)
    app.deliver()  # nothing must be left to answer again
    app.poll()
    events = app.events_of(request["requestId"])
    # without verification, the retried POST meets 409 (busy with our own job) or 404 and ends Failed
    assert "Failed" not in types(events), events
    terminal = assert_one_terminal(events)
    assert [e["type"] for e in events].count(terminal["type"]) == 1
    assert_event_shape(terminal, request, "Succeeded")
    assert terminal["data"]["verification"] == ABSENT  # the 202 was lost: only the instance can tell
    assert not arm.checkpoint_exists(request["resourceUri"], "cp-lost")
    assert [d.checkpoint_id for d in arm.deletions] == ["cp-lost"]
    if seconds == 0.0:  # the retry met 404 for a checkpoint already gone
        assert terminal["data"]["armError"]["code"] == "NotFound"
    else:  # the retries met 409 while our own job ran; the outcome came from a 409, 404 or a redelivery
        assert 409 in [r.status for r in arm.requests(kind="submit")]
        assert terminal["data"].get("armError", {}).get("code", "none") in ("Conflict", "NotFound", "none")


# ---------------------------------------------------------------- 5: 409, the VM busy with another job


def test_busy_vm_then_free_ends_in_succeeded(app, arm, identity):
    # The other job is not this app's (another system's deletion, straight to ARM): the VM is busy in
    # ARM's eyes, and the app meets SCVMM's 409.
    uri = new_resource_uri()
    arm.set_checkpoints(uri, ["cp-a", "cp-b"])
    arm.one_job_per_vm = True
    arm.script("cp-a", Scenario(done_after_seconds=1.0))  # the other job holds the VM for 1 s
    with requests.Session() as other_system:
        other_system.trust_env = False  # the emulator's CA, whatever REQUESTS_CA_BUNDLE says
        token = identity.mint("https://management.azure.com")
        answer = other_system.post(
            arm.url_for(uri),
            json={"id": "cp-a"},
            headers={"Authorization": f"Bearer {token}"},
            verify=arm.ca_bundle_path,
            timeout=10,
        )
    assert answer.status_code == 202, answer.text
    request = request_for("cp-b", "r-busy", uri)
    app.send(request)
    by_request = app.run(["r-busy"], timeout=30)
    events = by_request["r-busy"]
    assert 409 in [r.status for r in arm.requests(kind="submit") if r.body == {"id": "cp-b"}]
    # without the 409 being transient while the checkpoint is there, this request would end Failed
    assert "Failed" not in types(events), events
    terminal = assert_one_terminal(events)
    assert_event_shape(terminal, request, "Succeeded")
    assert arm.checkpoints(uri) == []


# ---------------------------------------------------------------- 6: an operation that ends Failed


@pytest.mark.parametrize("submit", ["accepted", "accepted_async"])
def test_failed_operation_with_the_checkpoint_still_there_is_failed(app, arm, submit):
    request = request_for("cp-stays", f"r-op-failed-{submit}")
    arm.set_checkpoints(request["resourceUri"], ["cp-stays"])
    arm.default = Scenario(submit=submit, final="Failed", done_after_polls=1)
    events = one_request(app, request)
    assert types(events) == ["Accepted", "Failed"]
    assert_event_shape(events[1], request, "Failed")
    assert events[1]["data"]["error"]["code"] == "CheckpointDeleteFailed"
    assert "verification" not in events[1]["data"]
    # the instance was read (and listed it): a verdict without reading it would show no instance GET
    assert [r.status for r in instance_reads(arm)] == [200]


@pytest.mark.parametrize("submit", ["accepted", "accepted_async"])
def test_failed_operation_whose_checkpoint_is_gone_is_verified_success(app, arm, submit):
    request = request_for("cp-went", f"r-op-failed-gone-{submit}")
    arm.set_checkpoints(request["resourceUri"], ["cp-root", "cp-went"])
    arm.default = Scenario(submit=submit, final="Failed", done_after_polls=1)
    app.send(request)
    app.deliver()
    assert types(app.events_of(request["requestId"])) == ["Accepted"]
    arm.set_checkpoints(request["resourceUri"], ["cp-root"])  # the merge happened after all
    events = app.run([request["requestId"]])[request["requestId"]]
    assert types(events) == ["Accepted", "Succeeded"]
    # without verification, ARM's Failed status would be the outcome
    assert_verified(events[1], request, "CheckpointDeleteFailed")
    assert events[1]["data"]["pollCount"] == 2


# ---------------------------------------------------------------- 7: the {} body is never verified


@pytest.mark.parametrize("row", ["post-404", "operation-failed", "redelivered"])
def test_a_request_without_checkpoint_id_is_never_verified(app, arm, row):
    request = request_for(None, f"r-empty-{row}")
    arm.set_checkpoints(request["resourceUri"], [])  # an instance that lists nothing at all
    if row == "post-404":
        arm.default = Scenario(submit=Fault.arm_error(404, "NotFound", "nothing to delete"))
        events = one_request(app, request)
        assert types(events) == ["Failed"]
    elif row == "operation-failed":
        arm.default = Scenario(final="Failed")
        events = one_request(app, request)
        assert types(events) == ["Accepted", "Failed"]
    else:
        app.services.submitter.handle(json.dumps(request), "m-empty", 2)
        events = app.run([request["requestId"]])[request["requestId"]]
        assert types(events) == ["Accepted", "Succeeded"]
    # verifying {} would read the instance (which lists no checkpoint) and claim checkpointAbsent
    assert instance_reads(arm) == []
    assert all("verification" not in e["data"] for e in events)
    assert len(arm.requests(kind="submit")) == 1


def test_busy_vm_409_without_checkpoint_id_is_transient_and_never_verified(app, arm):
    request = request_for(None, "r-empty-409")
    arm.set_checkpoints(request["resourceUri"], [])
    arm.default = Scenario(submit_faults=[Fault.arm_error(409, "Conflict", "The VM is busy with another job")])
    events = one_request(app, request)
    assert instance_reads(arm) == []  # never verified
    # a 409 read as "other 4xx" ends Failed/Conflict on the first try instead of being retried
    assert types(events) == ["Accepted", "Succeeded"]
    assert [r.status for r in arm.requests(kind="submit")] == [409, 202]


# ---------------------------------------------------------------- 8: the poison handler


def put_on_poison_queue(app, text: str) -> str:
    with contextlib.suppress(ResourceExistsError):
        app.poison_queue.create_queue()
    return app.poison_queue.send_message(text).id


@pytest.mark.parametrize("present", [False, True], ids=["checkpoint-gone", "checkpoint-there"])
def test_poisoned_request_is_verified(app, arm, present):
    request = request_for("cp-p", f"r-poison-{present}")
    arm.set_checkpoints(request["resourceUri"], ["cp-p"] if present else [])
    put_on_poison_queue(app, json.dumps(request))
    app.deliver()
    events = app.events_of(request["requestId"])
    assert len(events) == 1, events
    if present:
        assert types(events) == ["Failed"]
        assert_event_shape(events[0], request, "Failed")
        assert events[0]["data"]["error"]["code"] == "RetriesExhausted"
        assert "verification" not in events[0]["data"]
    else:  # without verification in the poison handler, this would be Failed/RetriesExhausted
        assert_verified(events[0], request, None)
    assert len(instance_reads(arm)) == 1
    assert arm.requests(kind="submit") == []
    assert app.count(app.poison_queue) == 0


def test_poisoned_request_retries_a_transient_instance_read(app, arm, azurite):
    request = request_for("cp-p", "r-poison-503")
    arm.set_checkpoints(request["resourceUri"], [])  # gone
    arm.default = Scenario(instance_faults=[Fault(status=503)])
    put_on_poison_queue(app, json.dumps(request))
    for _ in range(3):
        app.deliver()
    events = app.events_of(request["requestId"])
    # one 503 to the only instance read turns a deletion that happened into Failed/RetriesExhausted
    assert types(events) == ["Succeeded"], events
    assert_verified(events[0], request, None)
    second = QueueClient.from_connection_string(azurite.connection_string, app.settings.poison_queue + "-poison")
    assert app.count(second) == 0


def test_deeply_nested_poison_message_ends_in_one_failed_and_no_second_poison(app, arm, azurite):
    message_id = put_on_poison_queue(app, "[" * 1000)
    for _ in range(6):  # past maxDequeueCount: a crashing handler would move it on
        app.deliver()
    events = app.events()
    # a crash on the nesting would retry (duplicate events) and then poison the poison message
    assert types(events) == ["Failed"], events
    assert events[0]["data"]["requestId"] == message_id
    assert events[0]["data"]["error"]["code"] == "RetriesExhausted"
    assert events[0]["source"] == "/checkpoint-delete/invalid-request"
    second = QueueClient.from_connection_string(azurite.connection_string, app.settings.poison_queue + "-poison")
    assert app.count(second) == 0
    assert app.count(app.poison_queue) == 0
    assert arm.received == []


def test_an_accepted_event_that_cannot_be_written_is_written_by_the_poller_and_one_outcome_follows(app, arm):
    # Before: the delivery failed after the tracking message, each redelivery met the VM busy with
    # its own operation (409), the last one ended Failed/RetriesExhausted, and the poller then
    # ended the same request Succeeded.
    uri = new_resource_uri()
    arm.set_checkpoints(uri, ["cp-a"])
    arm.one_job_per_vm = True
    arm.script("cp-a", Scenario(retry_after=0, done_after_seconds=2.0))
    writer = app.services.submitter._events
    real, failures = writer.write, []

    def write(event):
        if event["type"].endswith("Accepted") and not failures:
            failures.append(event)
            raise ConnectionError("the events queue did not answer")
        real(event)

    writer.write = write
    try:
        request = request_for("cp-a", "r-unwritten", uri)
        app.send(request)
        events = app.run(["r-unwritten"], timeout=30)["r-unwritten"]
    finally:
        writer.write = real
    assert failures, "the Accepted write was not made to fail"
    assert types(events) == ["Accepted", "Succeeded"]
    assert [r.status for r in arm.requests(kind="submit")] == [202]  # never POSTed again
