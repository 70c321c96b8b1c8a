"""Retention policies end to end, and one operation per VM at a time (issue 11), on the stand-ins:
Azurite's queues and tables, the ARM emulator with VM instances whose checkpoint chains the
deletions really shorten, and SCVMM's one job per VM (a second operation on a busy VM: 409)."""

from __future__ import annotations

import json
import time

import pytest

from localdev.arm_emulator import Fault, Scenario
from tests.support.app_harness import TERMINAL, new_resource_uri
from tests.support.events import types

COMPLETED = "ScVmm.CheckpointPolicy.Completed"
FAILED = "ScVmm.CheckpointPolicy.Failed"


@pytest.fixture
def vm_arm(arm):
    """One job per VM, as SCVMM; operations that run a little while, so that overlaps would show."""
    arm.one_job_per_vm = True
    arm.default = Scenario(retry_after=0, done_after_seconds=0.3)
    return arm


def chain(count: int, names=None) -> list[dict]:
    names = names or [f"nightly-{i}" for i in range(count)]
    return [{"checkpointID": f"cp-{i:02d}", "name": names[i]} for i in range(count)]


def run_until(app, done, timeout: float = 60.0) -> list[dict]:
    """Deliver and poll until `done(events)`; returns every event."""
    deadline = time.monotonic() + timeout
    while True:
        app.deliver()
        app.poll()
        events = app.events()
        if done(events):
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"not done in {timeout} s: {[(e['type'], e['id']) for e in events]}")
        time.sleep(0.1)


def policy_ended(request_id: str):
    return lambda events: any(e["id"] in (f"{request_id}:completed", f"{request_id}:failed") for e in events)


def of_policy(events: list[dict], request_id: str) -> list[dict]:
    return [e for e in events if e["data"]["requestId"].startswith(f"{request_id}/")]


def test_keep_latest_3_of_10_deletes_the_7_oldest_in_order_each_as_an_ordinary_deletion(app, vm_arm):
    uri = new_resource_uri()
    vm_arm.set_checkpoints(uri, chain(10))
    request = {"resourceUri": uri, "policy": {"keepLatest": 3}, "requestId": "p-keep", "correlationId": "c-1"}
    app.send(request)
    events = run_until(app, policy_ended("p-keep"))
    oldest = [f"cp-{i:02d}" for i in range(7)]
    assert vm_arm.checkpoints(uri) == ["cp-07", "cp-08", "cp-09"]
    deletions = of_policy(events, "p-keep")
    assert [e["type"].rsplit(".", 1)[1] for e in deletions] == ["Accepted", "Succeeded"] * 7
    assert [e["subject"] for e in deletions[::2]] == oldest  # one after another, the oldest first
    assert {e["data"]["requestId"] for e in deletions} == {f"p-keep/{cp}" for cp in oldest}
    assert {e["data"]["correlationId"] for e in deletions} == {"c-1"}
    (closing,) = [e for e in events if e["type"] == COMPLETED]
    assert closing["id"] == "p-keep:completed" and closing["source"] == uri
    data = closing["data"]
    assert (data["deleted"], data["kept"], data["failed"], data["skipped"]) == (
        oldest,
        ["cp-07", "cp-08", "cp-09"],
        [],
        [],
    )
    assert (data["policy"], data["dryRun"], data["correlationId"]) == ({"keepLatest": 3}, False, "c-1")
    assert vm_arm.overlaps == 0
    assert [d.checkpoint_id for d in vm_arm.deletions] == oldest


def test_a_dry_run_changes_nothing_and_says_what_would_go(app, vm_arm):
    uri = new_resource_uri()
    vm_arm.set_checkpoints(uri, chain(5))
    app.send({"resourceUri": uri, "policy": {"keepLatest": 2}, "dryRun": True, "requestId": "p-dry"})
    events = run_until(app, policy_ended("p-dry"))
    assert [e["type"] for e in events] == [COMPLETED]
    data = events[0]["data"]
    assert (data["deleted"], data["kept"], data["dryRun"]) == (["cp-00", "cp-01", "cp-02"], ["cp-03", "cp-04"], True)
    assert vm_arm.checkpoints(uri) == [f"cp-{i:02d}" for i in range(5)]
    assert vm_arm.requests(kind="submit") == []


def test_a_name_pattern_deletes_only_matching_names(app, vm_arm):
    uri = new_resource_uri()
    names = ["base", "pre-patch-1", "nightly-2", "PRE-PATCH-3", "nightly-4"]
    vm_arm.set_checkpoints(uri, chain(5, names))
    app.send({"resourceUri": uri, "policy": {"namePattern": "pre-patch-*"}, "requestId": "p-pattern"})
    events = run_until(app, policy_ended("p-pattern"))
    assert vm_arm.checkpoints(uri) == ["cp-00", "cp-02", "cp-04"]
    (closing,) = [e for e in events if e["type"] == COMPLETED]
    assert closing["data"]["deleted"] == ["cp-01", "cp-03"]
    assert closing["data"]["kept"] == ["cp-00", "cp-02", "cp-04"]


def test_a_policy_for_a_vm_that_does_not_exist_ends_failed_with_arms_error(app, vm_arm):
    uri = new_resource_uri("no-such-vm")
    app.send({"resourceUri": uri, "policy": {"keepLatest": 1}, "requestId": "p-missing", "correlationId": "c-9"})
    events = run_until(app, policy_ended("p-missing"))
    assert [e["type"] for e in events] == [FAILED]
    event = events[0]
    assert event["id"] == "p-missing:failed" and event["data"]["correlationId"] == "c-9"
    assert event["data"]["error"]["code"] == "ResourceNotFound"
    assert (event["data"]["deleted"], event["data"]["kept"]) == ([], [])


def test_nothing_to_delete_completes_at_once(app, vm_arm):
    uri = new_resource_uri()
    vm_arm.set_checkpoints(uri, chain(2))
    app.send({"resourceUri": uri, "policy": {"keepLatest": 5}, "requestId": "p-none"})
    events = run_until(app, policy_ended("p-none"))
    assert [e["type"] for e in events] == [COMPLETED]
    assert (events[0]["data"]["deleted"], events[0]["data"]["kept"]) == ([], ["cp-00", "cp-01"])


def test_after_a_failed_deletion_the_run_stops_and_the_rest_are_skipped(app, vm_arm):
    uri = new_resource_uri()
    vm_arm.set_checkpoints(uri, chain(6))
    vm_arm.script("cp-01", Scenario(retry_after=0, final="Failed"))  # the operation ends Failed
    app.send({"resourceUri": uri, "policy": {"keepLatest": 1}, "requestId": "p-stop"})
    events = run_until(app, policy_ended("p-stop"))
    (closing,) = [e for e in events if e["type"] == COMPLETED]
    data = closing["data"]
    assert (data["deleted"], data["failed"]) == (["cp-00"], ["cp-01"])
    assert data["skipped"] == ["cp-02", "cp-03", "cp-04"] and data["kept"] == ["cp-05"]
    assert vm_arm.checkpoints(uri) == ["cp-01", "cp-02", "cp-03", "cp-04", "cp-05"]
    assert [e["data"]["requestId"] for e in of_policy(events, "p-stop") if e["type"].endswith("Failed")] == [
        "p-stop/cp-01"
    ]


def test_two_policies_and_three_deletions_at_once_never_overlap_on_the_vm(app, vm_arm):
    uri = new_resource_uri()
    vm_arm.set_checkpoints(uri, chain(12, [f"a-{i}" if i % 2 else f"b-{i}" for i in range(12)]))
    singles = [{"resourceUri": uri, "checkpointId": f"cp-{i:02d}", "requestId": f"single-{i}"} for i in (9, 10, 11)]
    app.send({"resourceUri": uri, "policy": {"namePattern": "a-*", "keepLatest": 1}, "requestId": "p-a"})
    for single in singles[:2]:
        app.send(single)
    app.send({"resourceUri": uri, "policy": {"namePattern": "b-*", "keepLatest": 1}, "requestId": "p-b"})
    app.send(singles[2])

    def all_done(events):
        ended = {e["id"] for e in events}
        singles_done = all(
            any(e["data"]["requestId"] == s["requestId"] and e["type"] in TERMINAL for e in events) for s in singles
        )
        return {"p-a:completed", "p-b:completed"} <= ended and singles_done

    events = run_until(app, all_done, timeout=90)
    assert vm_arm.overlaps == 0  # never two operations on the VM at once
    assert 409 not in [r.status for r in vm_arm.requests(kind="submit")]
    terminal = [e for e in events if e["type"] in TERMINAL]
    assert {e["type"] for e in terminal} == {"ScVmm.CheckpointDelete.Succeeded"}
    assert len(terminal) == len({e["id"] for e in terminal})  # one terminal event per deletion
    # a-* deletes cp-01..cp-09 (odd) and keeps cp-11, b-* deletes cp-00..cp-08 (even) and keeps cp-10;
    # the single deletions take cp-09 (as a-* does: one of the two finds it gone), cp-10 and cp-11
    assert vm_arm.checkpoints(uri) == []


def test_a_request_delivered_twice_while_its_vm_is_busy_waits_once(app, vm_arm):
    uri = new_resource_uri()
    vm_arm.set_checkpoints(uri, chain(3))
    vm_arm.script("cp-00", Scenario(retry_after=0, done_after_seconds=1.0))
    app.send({"resourceUri": uri, "checkpointId": "cp-00", "requestId": "first"})
    app.deliver()
    waiting = json.dumps({"resourceUri": uri, "checkpointId": "cp-01", "requestId": "second"})
    app.services.submitter.handle(waiting, "m-1", 1)
    app.services.submitter.handle(waiting, "m-1", 2)  # the same message again: a crash before it was consumed
    events = run_until(app, lambda ev: sum(e["type"] in TERMINAL for e in ev) >= 2)
    time.sleep(1.0)
    app.deliver()
    app.poll()
    second = [e for e in app.events() if e["data"]["requestId"] == "second"]
    assert types(second) == ["Accepted", "Succeeded"], events
    assert [r.body for r in vm_arm.requests(kind="submit")] == [{"id": "cp-00"}, {"id": "cp-01"}]


def test_a_redelivered_policy_request_goes_on_with_its_run_and_deletes_nothing_twice(app, vm_arm):
    uri = new_resource_uri()
    vm_arm.set_checkpoints(uri, chain(4))
    text = json.dumps({"resourceUri": uri, "policy": {"keepLatest": 1}, "requestId": "p-again"})
    app.services.submitter.handle(text, "m-p", 1)
    app.deliver()  # the first deletion arrives
    app.services.submitter.handle(text, "m-p", 2)  # delivered again: the run exists, nothing is queued twice
    events = run_until(app, policy_ended("p-again"))
    assert [d.checkpoint_id for d in vm_arm.deletions] == ["cp-00", "cp-01", "cp-02"]
    assert len([e for e in events if e["type"] == COMPLETED]) == 1
    assert len(vm_arm.requests(kind="submit")) == 3


def test_a_vm_busy_with_another_systems_job_still_meets_409_and_is_retried(app, vm_arm):
    # turns keep the app from colliding with itself; another system's job is the contract's 409 row
    uri = new_resource_uri()
    vm_arm.set_checkpoints(uri, chain(3))
    vm_arm.script("cp-02", Scenario(submit_faults=[Fault(409, "Conflict")] * 2, retry_after=0))
    app.send({"resourceUri": uri, "checkpointId": "cp-02", "requestId": "busy"})
    events = run_until(app, lambda ev: any(e["type"] in TERMINAL for e in ev))
    assert types([e for e in events if e["data"]["requestId"] == "busy"]) == ["Accepted", "Succeeded"]


def test_without_a_table_service_deletions_run_and_policies_end_failed_saying_why(make_app, vm_arm, azurite):
    queues_only = azurite.connection_string.split("TableEndpoint=")[0]
    app = make_app(AzureWebJobsStorage=queues_only)
    uri = new_resource_uri()
    vm_arm.set_checkpoints(uri, chain(3))
    app.send({"resourceUri": uri, "checkpointId": "cp-00", "requestId": "plain"})
    app.send({"resourceUri": uri, "policy": {"keepLatest": 1}, "requestId": "p-off"})
    events = run_until(app, lambda ev: policy_ended("p-off")(ev) and any(e["type"] in TERMINAL for e in ev))
    (failed,) = [e for e in events if e["type"] == FAILED]
    assert failed["data"]["error"]["code"] == "PoliciesUnavailable"
    assert "tableServiceUri" in failed["data"]["error"]["message"]
    assert types([e for e in events if e["data"]["requestId"] == "plain"]) == ["Accepted", "Succeeded"]
