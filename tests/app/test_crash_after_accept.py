"""A process that dies after ARM accepted its deletion and before the request message is consumed.

The request comes again (a redelivery, or the poison queue once deliveries run out). Before, it
read the VM instance, found the checkpoint (the operation still ran), POSTed again, met the VM busy
with its own operation (409) and ended Failed/RetriesExhausted, while the poller followed the
first operation to Succeeded: two terminal types for one request. Now the accepted operation is
noted in the VM's turn before it is tracked, and whatever delivers the request again follows it."""

from __future__ import annotations

import json
import time

import pytest

from localdev.arm_emulator import Scenario
from shared.turn_rows import TURN, vm_key
from tests.support.app_harness import TERMINAL, new_resource_uri
from tests.support.events import types


class Died(BaseException):
    """The process ends here: nothing after it runs, no `except Exception` sees it."""


def die_at_tracking(app, after_the_write: bool) -> list:
    """Make the next tracking write end the process, before or after the message is written."""
    tracking = app.services.submitter._tracking
    real, calls = tracking.add, []

    def add(operation, delay):
        calls.append(operation)
        tracking.add = real
        if after_the_write:
            real(operation, delay)
        raise Died()

    tracking.add = add
    return calls


def settle(app, request_id: str, timeout: float = 30.0) -> list[dict]:
    """Poll until the request has a terminal event and no operation is tracked any more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app.poll()
        events = app.events_of(request_id)
        if any(e["type"] in TERMINAL for e in events) and app.count(app.tracking_queue) == 0:
            return events
        time.sleep(0.2)
    raise AssertionError(f"{request_id} did not settle in {timeout} s: {types(app.events_of(request_id))}")


def a_long_deletion(arm, name: str) -> dict:
    uri = new_resource_uri()
    arm.set_checkpoints(uri, ["cp-root", "cp-a"])
    arm.one_job_per_vm = True  # a second POST while the first runs meets 409, as SCVMM answers it
    arm.script("cp-a", Scenario(retry_after=0, done_after_seconds=3.0))
    return {"resourceUri": uri, "checkpointId": "cp-a", "requestId": name}


@pytest.mark.parametrize("after_the_write", [False, True], ids=["before-the-tracking-message", "after-it"])
def test_a_redelivery_follows_the_deletion_an_earlier_delivery_had_accepted(app, arm, after_the_write):
    request = a_long_deletion(arm, f"r-died-{after_the_write}")
    body = json.dumps(request)
    calls = die_at_tracking(app, after_the_write)
    with pytest.raises(Died):
        app.services.submitter.handle(body, "m-died", 1)
    assert calls, "the process was not made to die at the tracking write"
    assert app.events_of(request["requestId"]) == []  # it died before its Accepted

    # the queue delivers the message again while the first operation still runs
    assert app.services.submitter.handle(body, "m-died", 2) == "accepted"
    events = settle(app, request["requestId"])
    assert {e["type"].rsplit(".", 1)[1] for e in events} == {"Accepted", "Succeeded"}, types(events)
    assert len({e["id"] for e in events}) == 2  # a repeat (two trackers) carries the same id
    assert [r.status for r in arm.requests(kind="submit")] == [202], "POSTed again"
    assert not arm.checkpoint_exists(request["resourceUri"], "cp-a")
    # the VM is free again: the next request for it runs at once
    follow = {"resourceUri": request["resourceUri"], "checkpointId": "cp-root", "requestId": "r-next"}
    assert app.services.submitter.handle(json.dumps(follow), "m-next", 1) == "accepted"


def test_a_request_poisoned_after_its_deletion_was_accepted_follows_it(app, arm):
    request = a_long_deletion(arm, "r-died-poisoned")
    body = json.dumps(request)
    die_at_tracking(app, after_the_write=True)
    with pytest.raises(Died):
        app.services.submitter.handle(body, "m-poisoned", 1)
    app.services.poison.handle(body, "m-poisoned")
    events = settle(app, request["requestId"])
    assert {e["type"].rsplit(".", 1)[1] for e in events} == {"Accepted", "Succeeded"}, types(events)
    assert [r.status for r in arm.requests(kind="submit")] == [202]


def test_the_note_keeps_a_lone_deletion_to_one_call_to_give_its_turn_back(app, arm):
    uri = new_resource_uri()
    arm.set_checkpoints(uri, ["cp-root", "cp-a"])
    request = {"resourceUri": uri, "checkpointId": "cp-a", "requestId": "r-lone"}
    assert app.services.submitter.handle(json.dumps(request), "m-lone", 1) == "accepted"
    (message,) = app.tracking_queue.peek_messages(max_messages=32)
    record = json.loads(message.content)
    row = app.services.submitter._turns._table.get_entity(vm_key(uri), TURN)
    assert json.loads(row["operation"])["operationUrl"] == record["operationUrl"]
    assert record["turnTag"] == row.metadata["etag"]  # the give-back can be one conditional delete
