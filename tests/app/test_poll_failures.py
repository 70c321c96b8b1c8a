"""Failures while polling (contract section 5, Poll; issue 7 item 5), end to end: which status
answers are transient, which are the operation's own failure, following the VM instance when the
status URL may not be read, the failure window and Retry-After. Each test names, in a comment,
what would fail without the behaviour it proves."""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise

import pytest

from localdev.arm_emulator import Fault, Scenario
from tests.support.app_harness import new_resource_uri
from tests.support.events import assert_event_shape, one_request, types

ABSENT = "checkpointAbsent"
BUSY = {"code": "ServiceUnavailable", "message": "The service is busy (emulated)."}


def request_for(cp: str | None, rid: str) -> dict:
    request = {"resourceUri": new_resource_uri(), "requestId": rid}
    if cp is not None:
        request["checkpointId"] = cp
    return request


def status_gets(arm) -> list:
    return arm.requests(kind="status")


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


# ---------------------------------------------------------------- 1: throttling is not a failure


def test_eight_429s_in_a_row_do_not_end_a_live_operation(app, arm):
    arm.default = Scenario(poll_faults=[Fault.throttled(1)] * 8)
    request = request_for("cp-429", "r-eight-429")
    events = one_request(app, request, timeout=30)
    # a poller that gave up after its retry attempts (4 in these tests) would end Failed
    assert types(events) == ["Accepted", "Succeeded"]
    assert_event_shape(events[1], request, "Succeeded")
    assert [g.status for g in status_gets(arm)] == [429] * 8 + [200]
    assert events[1]["data"]["pollCount"] == 9


# ---------------------------------------------------------------- 2: 5xx with an ErrorResponse


@pytest.mark.parametrize("status", [503, 500])
def test_error_response_with_retry_after_on_a_status_url_is_transient(app, arm, status):
    arm.default = Scenario(poll_faults=[Fault(status=status, error=BUSY, retry_after=1)])
    request = request_for("cp-busy", f"r-busy-{status}")
    events = one_request(app, request)
    # reading the ErrorResponse as the operation's failure would end Failed/ServiceUnavailable
    assert types(events) == ["Accepted", "Succeeded"]
    assert "verification" not in events[1]["data"]
    gets = status_gets(arm)
    assert [g.status for g in gets] == [status, 200]
    assert gets[1].time - gets[0].time >= 0.9  # its Retry-After second


def test_500_with_error_response_and_no_retry_after_is_the_operations_failure(app, arm):
    request = request_for("cp-500", "r-500-final")
    arm.set_checkpoints(request["resourceUri"], ["cp-500"])
    arm.default = Scenario(final=Fault.arm_error(500, "InternalOperationError", "it broke"))
    events = one_request(app, request)
    # a 500 with a body read as transient would keep polling for the whole (1 h) failure window
    assert types(events) == ["Accepted", "Failed"]
    assert_event_shape(events[1], request, "Failed")
    assert events[1]["data"]["error"]["code"] == "InternalOperationError"
    assert [g.status for g in status_gets(arm)] == [500]
    # verification first: the instance was read after the status GET, and still lists the checkpoint
    (read,) = arm.requests(kind="instance")
    assert read.time > status_gets(arm)[0].time
    assert arm.checkpoint_exists(request["resourceUri"], "cp-500")


# ---------------------------------------------------------------- 3: 401/403 on a status URL


@pytest.mark.parametrize("status", [401, 403])
def test_status_url_not_permitted_follows_the_instance_until_the_checkpoint_is_gone(app, arm, status):
    code = "AuthorizationFailed" if status == 403 else "InvalidAuthenticationToken"
    request = request_for("cp-auth", f"r-follow-{status}")
    arm.set_checkpoints(request["resourceUri"], ["cp-root", "cp-auth"])
    # the first status read is refused; the operation itself completes 2 s after the submit
    arm.default = Scenario(poll_faults=[Fault.arm_error(status, code, "no read on operations")], done_after_seconds=2.0)
    events = one_request(app, request)
    # without following the instance, a 401/403 would end Failed (checkpoint still there then)
    assert types(events) == ["Accepted", "Succeeded"]
    assert_event_shape(events[1], request, "Succeeded")
    assert events[1]["data"]["verification"] == ABSENT
    assert events[1]["data"]["armError"]["code"] == code
    assert [g.status for g in status_gets(arm)] == [status]  # the status URL was left for the instance
    reads = arm.requests(kind="instance")
    assert len(reads) >= 2  # at least once while the checkpoint was still listed
    (deletion,) = arm.deletions
    assert deletion.checkpoint_id == "cp-auth"
    assert epoch(events[1]["data"]["completedAt"]) >= deletion.time - 0.01  # not before the removal


def test_status_url_not_permitted_without_checkpoint_id_is_failed_with_the_403(app, arm):
    arm.default = Scenario(poll_faults=[Fault.arm_error(403, "AuthorizationFailed", "no read on operations")])
    request = request_for(None, "r-follow-empty")
    events = one_request(app, request)
    # the {} body cannot be followed on the instance: anything but Failed/403 would be made up
    assert types(events) == ["Accepted", "Failed"]
    assert_event_shape(events[1], request, "Failed")
    assert events[1]["data"]["error"]["code"] == "AuthorizationFailed"
    assert arm.requests(kind="instance") == []


# ---------------------------------------------------------------- 4: the failure window


def test_transient_failures_end_in_retries_exhausted_only_after_the_window(make_app, arm):
    app = make_app(POLL_FAILURE_WINDOW_SECONDS="3")
    request = request_for("cp-window", "r-window")
    arm.set_checkpoints(request["resourceUri"], ["cp-window"])
    # a throttle, a dropped connection, then a busy 503 (ErrorResponse, no Retry-After) for ever
    arm.default = Scenario(
        poll_faults=[Fault.throttled(1), Fault.dropped()], final=Fault(status=503, error=BUSY, retry_after=None)
    )
    events = one_request(app, request, timeout=30)
    assert types(events) == ["Accepted", "Failed"]
    assert_event_shape(events[1], request, "Failed")
    error = events[1]["data"]["error"]
    assert error["code"] == "RetriesExhausted"
    assert error["details"][0]["code"] == "ServiceUnavailable"  # the last error, not the first (429)
    gets = status_gets(arm)
    assert len(gets) >= 4 and gets[-1].status == 503
    # ending on a count of failures rather than their duration would end before 3 s have passed
    assert epoch(events[1]["data"]["completedAt"]) - gets[0].time >= 3.0
    assert len(arm.requests(kind="instance")) == 1  # verified before giving up; the checkpoint is there


def test_a_success_in_between_restarts_the_failure_window(make_app, arm):
    app = make_app(POLL_FAILURE_WINDOW_SECONDS="3")
    # two 503s, one 202 "still running", then 503 for ever
    arm.default = Scenario(poll_faults=[Fault(status=503)] * 2, done_after_polls=1, final=Fault(status=503))
    request = request_for(None, "r-window-restart")
    events = one_request(app, request, timeout=30)
    assert types(events) == ["Accepted", "Failed"]
    assert events[1]["data"]["error"]["code"] == "RetriesExhausted"
    gets = status_gets(arm)
    statuses = [g.status for g in gets]
    assert statuses[:3] == [503, 503, 202] and set(statuses[3:]) == {503}
    # a window kept from the first 503 would end about 1 s after the 202, not 3 s after it
    assert epoch(events[1]["data"]["completedAt"]) - gets[2].time >= 3.0
    assert gets[-1].time - gets[3].time >= 2.5


# ---------------------------------------------------------------- 5: Retry-After


def test_retry_after_on_status_answers_is_honoured(app, arm):
    # the 202 to the POST, a 429 and a 202 "still running" each ask for 2 s
    arm.default = Scenario(retry_after=2, done_after_polls=1, poll_faults=[Fault.throttled(2)])
    request = request_for("cp-ra", "r-retry-after")
    events = one_request(app, request, timeout=30)
    assert types(events) == ["Accepted", "Succeeded"]
    (post,) = arm.requests(kind="submit")
    gets = status_gets(arm)
    assert [g.status for g in gets] == [429, 202, 200]
    # a poller that read as soon as it could (each second) would read sooner than asked
    times = [post.time] + [g.time for g in gets]
    gaps = [later - earlier for earlier, later in pairwise(times)]
    assert all(gap >= 1.9 for gap in gaps), gaps


def test_a_309_digit_retry_after_on_a_transient_answer_breaks_nothing(app, arm):
    arm.default = Scenario(poll_faults=[Fault(status=503, retry_after="9" * 309)])
    request = request_for("cp-huge", "r-huge-transient")
    events = one_request(app, request)
    # float(int("9" * 309)) overflows: an unguarded parse would crash the poll of this operation
    assert types(events) == ["Accepted", "Succeeded"]
    assert [g.status for g in status_gets(arm)] == [503, 200]


def test_a_309_digit_retry_after_on_still_running_keeps_the_operation_tracked(app, arm):
    arm.default = Scenario(poll_faults=[Fault(status=202, retry_after="9" * 309)])
    request = request_for("cp-huge", "r-huge-running")
    app.send(request)
    app.deliver()
    assert types(app.events()) == ["Accepted"]
    # an overflow on the header would end in "error" (the message only reappearing after its lease)
    assert app.services.poller.run() == {"running": 1}
    assert [g.status for g in status_gets(arm)] == [202]
    assert types(app.events()) == ["Accepted"]
    assert app.tracking_queue.get_queue_properties().approximate_message_count == 1
    assert app.count(app.tracking_queue) == 0  # hidden for the capped delay, not polled at once
