"""An operation still running whose next status read falls within its lease is held in the poll
run and read again when its Retry-After ends, without a storage call; one due later goes back to
the tracking queue. (Issue 8: status reads on time, fewer storage calls per deletion.)"""

from __future__ import annotations

import threading
import time
from itertools import pairwise

from localdev.arm_emulator import Fault, Scenario
from shared.poll import AFTER_FAILURE_SECONDS, HOLD_MAX_SECONDS
from shared.turn_rows import TURN, vm_key
from tests.support.app_harness import new_resource_uri
from tests.support.events import types


def count_reschedules(app) -> list:
    """Records each time the poller puts an operation back on the tracking queue."""
    calls: list = []
    tracking = app.services.poller._tracking
    original = tracking.reschedule

    def reschedule(message, operation, delay_seconds):
        calls.append(delay_seconds)
        return original(message, operation, delay_seconds)

    tracking.reschedule = reschedule
    return calls


def submit(app, request_id: str) -> dict:
    request = {"resourceUri": new_resource_uri(), "checkpointId": "cp", "requestId": request_id}
    app.send(request)
    app.deliver()
    return request


def wait_until_due(app, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while app.count(app.tracking_queue) == 0:
        assert time.monotonic() < end, "the tracking message never fell due"
        time.sleep(0.05)


def test_a_short_operation_ends_in_one_run_each_status_read_when_its_retry_after_ends(app, arm):
    arm.default = Scenario(retry_after=1, done_after_seconds=2.5, final="200")
    reschedules = count_reschedules(app)
    submit(app, "r-held")
    wait_until_due(app)
    outcomes = app.services.poller.run()
    # without holding, the run would put the operation back on the queue after its first read
    assert outcomes == {"running": 2, "succeeded": 1}
    assert reschedules == []
    events = app.events_of("r-held")
    assert types(events) == ["Accepted", "Succeeded"]
    assert events[1]["data"]["pollCount"] == 3
    gets = [g.time for g in arm.requests(kind="status")]
    gaps = [later - earlier for earlier, later in pairwise(gets)]
    assert all(1.0 <= gap < 1.6 for gap in gaps), gaps  # never early, and on time


def test_a_retry_after_beyond_the_lease_goes_back_to_the_queue(app, arm):
    arm.default = Scenario(poll_faults=[Fault(status=202, retry_after=100)])
    reschedules = count_reschedules(app)
    submit(app, "r-long")
    wait_until_due(app)
    started = time.monotonic()
    outcomes = app.services.poller.run()
    assert outcomes == {"running": 1}
    assert reschedules == [100]  # back on the queue, invisible for the Retry-After
    assert time.monotonic() - started < 10  # the run did not wait for it
    assert app.count(app.tracking_queue) == 0


def test_a_run_that_holds_operations_takes_those_that_fall_due_meanwhile(app, arm):
    arm.default = Scenario(retry_after=1, done_after_seconds=4, final="200")
    submit(app, "r-first")
    wait_until_due(app)
    result: dict = {}
    run = threading.Thread(target=lambda: result.update(app.services.poller.run()))
    run.start()
    time.sleep(1.5)
    submit(app, "r-second")  # due a second later, while the run holds the first
    run.join(30)
    assert not run.is_alive()
    # a run that only took what was due when it started would leave the second to the next run
    assert result["succeeded"] == 2
    for request_id in ("r-first", "r-second"):
        assert types(app.events_of(request_id)) == ["Accepted", "Succeeded"]


def test_a_transient_failure_waits_out_its_backoff_on_the_queue_not_in_the_run(app, arm):
    # held in the run, a host that dies during the backoff would delay the operation by its whole lease
    arm.default = Scenario(poll_faults=[Fault(status=503)], retry_after=0)
    reschedules = count_reschedules(app)
    submit(app, "r-transient")
    wait_until_due(app)
    assert app.services.poller.run() == {"transient": 1}
    assert reschedules == [1]
    assert types(app.events_of("r-transient")) == ["Accepted"]


def test_a_read_due_beyond_the_hold_limit_goes_back_to_the_queue(app, arm):
    arm.default = Scenario(poll_faults=[Fault(status=202, retry_after=int(HOLD_MAX_SECONDS) + 1)], retry_after=0)
    reschedules = count_reschedules(app)
    submit(app, "r-beyond-hold")
    wait_until_due(app)
    assert app.services.poller.run() == {"running": 1}
    assert reschedules == [int(HOLD_MAX_SECONDS) + 1]


def test_an_operation_whose_polling_failed_is_looked_at_again_soon_not_after_its_lease(app, arm):
    # Before, a failure while polling (here: the VM's turn could not be given back, as when a table
    # call times out) left the message hidden until its lease ended, 120 s, and the VM idle with it.
    arm.default = Scenario(retry_after=0, done_after_polls=0)
    turns = app.services.poller._turns
    real, failures = turns.give_back, []

    def give_back(*args, **kwargs):
        if not failures:
            failures.append(args)
            raise TimeoutError("the table did not answer")
        return real(*args, **kwargs)

    turns.give_back = give_back
    reschedules = count_reschedules(app)
    request = submit(app, "r-failed-poll")
    wait_until_due(app)
    app.services.poller.run()
    assert failures and reschedules == [AFTER_FAILURE_SECONDS]
    started = time.monotonic()
    while app.tracking_queue.get_queue_properties().approximate_message_count:
        assert time.monotonic() - started < AFTER_FAILURE_SECONDS + 10, "the operation is still tracked"
        app.poll()
        time.sleep(0.2)
    events = app.events_of(request["requestId"])
    assert types(events) == ["Accepted", "Succeeded", "Succeeded"]  # a repeat of the same event
    assert len({e["id"] for e in events}) == 2
    assert len(failures) == 1
    # the VM is free again: its turn was given back on the second look
    assert turns._get(vm_key(request["resourceUri"]), TURN) is None
