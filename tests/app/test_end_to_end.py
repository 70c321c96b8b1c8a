"""Every row of the contract's behaviour (section 5), end to end: a real message on the Azurite
requests queue, the functions run as the host runs them, the ARM emulator over HTTPS, the
identity endpoint, and the events read back from the events queue."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import datetime

import pytest

from localdev.arm_emulator import Fault, Scenario
from tests.support.app_harness import SUBMIT, new_resource_uri
from tests.support.events import assert_event_shape, one_request, types

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
# ---------------------------------------------------------------- success, each encoding


def test_success_via_location_200_after_polls(app, arm):
    arm.default = Scenario(done_after_polls=2, final="200")
    request = {
        "resourceUri": new_resource_uri(),
        "checkpointId": "cp-200",
        "requestId": "r-200",
        "correlationId": "c-1",
    }
    events = one_request(app, request)
    assert types(events) == ["Accepted", "Succeeded"]
    accepted, succeeded = events
    assert_event_shape(accepted, request, "Accepted")
    assert_event_shape(succeeded, request, "Succeeded")
    assert accepted["data"]["pollCount"] == 0
    assert succeeded["data"]["pollCount"] == 3
    assert succeeded["data"]["operationUrl"] == accepted["data"]["operationUrl"]
    assert succeeded["data"]["operationUrl"].startswith(arm.endpoint + "/")
    assert datetime.fromisoformat(succeeded["data"]["completedAt"]) >= datetime.fromisoformat(
        succeeded["data"]["submittedAt"]
    )
    assert app.count(app.tracking_queue) == 0
    assert arm.violations == []


def test_success_via_location_204(app, arm):
    arm.default = Scenario(done_after_polls=1, final="204")
    request = {"resourceUri": new_resource_uri(), "requestId": "r-204"}
    events = one_request(app, request)
    assert types(events) == ["Accepted", "Succeeded"]
    assert_event_shape(events[1], request, "Succeeded")


@pytest.mark.parametrize("answer", ["done_200", "done_204"])
def test_finished_at_once_gives_only_succeeded(app, arm, answer):
    arm.default = Scenario(submit=answer)
    request = {"resourceUri": new_resource_uri(), "checkpointId": "cp", "requestId": f"r-{answer}"}
    events = one_request(app, request)
    assert types(events) == ["Succeeded"]
    assert_event_shape(events[0], request, "Succeeded")
    assert app.count(app.tracking_queue) == 0


def _envelopes(request: dict) -> dict[str, tuple[object, str]]:
    """Each accepted envelope and encoding: (message, encoding)."""
    data_b64 = base64.b64encode(json.dumps(request).encode()).decode()
    event_grid = {
        "id": "eg-" + uuid.uuid4().hex,
        "eventType": "ScVmm.CheckpointDelete.Requested",
        "subject": "s",
        "eventTime": "2026-11-27T00:00:00Z",
        "dataVersion": "1",
        "data": request,
    }
    cloud_event = {
        "specversion": "1.0",
        "type": "ScVmm.CheckpointDelete.Requested",
        "source": "/producer",
        "id": "ce-" + uuid.uuid4().hex,
        "datacontenttype": "application/json",
        "data": request,
    }
    cloud_event_b64 = {
        "specversion": "1.0",
        "type": "t",
        "source": "/producer",
        "id": "ceb-" + uuid.uuid4().hex,
        "data_base64": data_b64,
        "traceparent": TRACEPARENT,
    }
    return {
        "plain": (request, "plain"),
        "base64": (request, "base64"),
        "eventgrid-base64": (event_grid, "base64"),
        "eventgrid-plain": (event_grid, "plain"),
        "cloudevent": (cloud_event, "plain"),
        "cloudevent-base64": (cloud_event, "base64"),
        "cloudevent-data_base64-traceparent": (cloud_event_b64, "plain"),
    }


@pytest.mark.parametrize("envelope", list(_envelopes({})))
def test_each_envelope_and_encoding_ends_in_one_accepted_and_one_succeeded(app, arm, envelope):
    arm.default = Scenario(done_after_polls=1)
    request = {"resourceUri": new_resource_uri(), "checkpointId": "cp-" + envelope}
    message, encoding = _envelopes(request)[envelope]
    message_id = app.send(message, encoding)
    # the request id defaults to the envelope's id, else the queue message id
    request_id = message.get("id", message_id)
    events = app.run([request_id])[request_id]
    assert types(events) == ["Accepted", "Succeeded"]
    expected = {**request, "traceparent": message.get("traceparent")}
    for event, status in zip(events, ("Accepted", "Succeeded"), strict=True):
        assert_event_shape(event, expected, status)
    assert len(app.events()) == 2
    assert app.count(app.poison_queue) == 0


# ---------------------------------------------------------------- invalid requests

INVALID = {
    "not-json": "this is not json",
    "not-an-object": "[1, 2, 3]",
    "no-resourceUri": json.dumps({"checkpointId": "cp"}),
    "relative-resourceUri": json.dumps({"resourceUri": new_resource_uri()[1:]}),
    "dotdot-resourceUri": json.dumps({"resourceUri": new_resource_uri() + "/../../x"}),
    "query-in-resourceUri": json.dumps({"resourceUri": new_resource_uri() + "?api-version=1"}),
    "long-checkpointId": json.dumps({"resourceUri": new_resource_uri(), "checkpointId": "x" * 257}),
    "empty-requestId": json.dumps({"resourceUri": new_resource_uri(), "requestId": ""}),
    "numeric-correlationId": json.dumps({"resourceUri": new_resource_uri(), "correlationId": 7}),
    "cloudevent-without-data": json.dumps({"specversion": "1.0", "id": "ce-x", "type": "t", "source": "s"}),
    "empty-segment-resourceUri": json.dumps({"resourceUri": new_resource_uri().replace("/rg-test/", "//")}),
    "dot-segment-resourceUri": json.dumps({"resourceUri": new_resource_uri().replace("/rg-test/", "/./")}),
    "hash-in-resourceUri": json.dumps({"resourceUri": new_resource_uri() + "#frag"}),
    "percent-in-resourceUri": json.dumps({"resourceUri": new_resource_uri().replace("vm1", "vm%2F1")}),
    "backslash-in-resourceUri": json.dumps({"resourceUri": new_resource_uri().replace("vm1", "vm\\1")}),
    "space-in-resourceUri": json.dumps({"resourceUri": new_resource_uri().replace("vm1", "vm 1")}),
    "control-in-resourceUri": json.dumps({"resourceUri": new_resource_uri().replace("vm1", "vm\u00071")}),
    "long-resourceUri": json.dumps({"resourceUri": new_resource_uri() + "/child/" + "x" * 1024}),
    "not-arm-id-resourceUri": json.dumps({"resourceUri": new_resource_uri().rsplit("/", 1)[0]}),
    "control-in-checkpointId": json.dumps({"resourceUri": new_resource_uri(), "checkpointId": "a\u0001b"}),
    "long-requestId": json.dumps({"resourceUri": new_resource_uri(), "requestId": "r" * 257}),
    "base64-of-not-json": base64.b64encode(b"not json either").decode(),
}
NAMED_FIELD = {
    "no-resourceUri": "resourceUri",
    "relative-resourceUri": "resourceUri",
    "dotdot-resourceUri": "resourceUri",
    "query-in-resourceUri": "resourceUri",
    "long-checkpointId": "checkpointId",
    "empty-requestId": "requestId",
    "numeric-correlationId": "correlationId",
    "cloudevent-without-data": "data",
    "empty-segment-resourceUri": "resourceUri",
    "dot-segment-resourceUri": "resourceUri",
    "hash-in-resourceUri": "resourceUri",
    "percent-in-resourceUri": "resourceUri",
    "backslash-in-resourceUri": "resourceUri",
    "space-in-resourceUri": "resourceUri",
    "control-in-resourceUri": "resourceUri",
    "long-resourceUri": "resourceUri",
    "not-arm-id-resourceUri": "resourceUri",
    "control-in-checkpointId": "checkpointId",
    "long-requestId": "requestId",
}


@pytest.mark.parametrize("case", list(INVALID))
def test_each_invalid_request_ends_in_one_invalid_request_event_and_no_poison(app, arm, case):
    text = INVALID[case]
    message_id = app.send(text)
    for _ in range(3):
        app.deliver()
    events = app.events()
    assert len(events) == 1, events
    (event,) = events
    assert event["type"] == "ScVmm.CheckpointDelete.Failed"
    assert event["data"]["error"]["code"] == "InvalidRequest"
    if case in NAMED_FIELD:
        assert NAMED_FIELD[case] in event["data"]["error"]["message"]
        assert event["data"]["error"]["target"] == NAMED_FIELD[case]
    assert event["data"]["requestId"] in (message_id, "ce-x")
    if "resourceUri" in event["data"]:
        assert event["source"] == event["data"]["resourceUri"]
    else:
        assert event["source"] == "/checkpoint-delete/invalid-request"
    assert app.count(app.requests_queue) == 0
    assert app.count(app.poison_queue) == 0
    assert arm.requests(method="POST") == []


# ---------------------------------------------------------------- ARM failures on submit


@pytest.mark.parametrize("status", [400, 404])
def test_client_error_on_submit_is_failed_with_arms_error(app, arm, status):
    arm.default = Scenario(submit=Fault.arm_error(status, "CheckpointNotFound", "no such checkpoint", target="id"))
    request = {"resourceUri": new_resource_uri(), "checkpointId": "gone", "requestId": f"r-{status}"}
    events = one_request(app, request)
    assert types(events) == ["Failed"]
    assert_event_shape(events[0], request, "Failed")
    error = events[0]["data"]["error"]
    assert (error["code"], error["message"], error["target"]) == ("CheckpointNotFound", "no such checkpoint", "id")
    assert len(arm.requests(method="POST")) == 1


def test_a_busy_vm_is_transient_and_its_error_is_kept(app, arm):
    """409 (the VM is busy with another job): retried, then RetriesExhausted carrying the 409."""
    arm.default = Scenario(submit=Fault.arm_error(409, "Conflict", "The VM is busy with another job"))
    request = {"resourceUri": new_resource_uri(), "checkpointId": "cp-busy", "requestId": "r-409"}
    events = one_request(app, request)
    assert types(events) == ["Failed"]
    error = events[0]["data"]["error"]
    assert error["code"] == "RetriesExhausted"
    assert error["details"][0]["code"] == "Conflict"
    assert len(arm.requests(method="POST")) == 15  # 3 tries in each of 5 deliveries


def test_429_then_success_honours_retry_after(app, arm):
    arm.default = Scenario(submit_faults=[Fault.throttled(1)], done_after_polls=0)
    request = {"resourceUri": new_resource_uri(), "requestId": "r-429"}
    events = one_request(app, request)
    assert types(events) == ["Accepted", "Succeeded"]
    posts = arm.requests(method="POST")
    assert len(posts) == 2
    assert posts[1].time - posts[0].time >= 0.9  # waited the Retry-After second


@pytest.mark.parametrize(
    "fault",
    [Fault(status=503), Fault(status=500), Fault(status=408), Fault.dropped(), Fault.slow(3.0)],
    ids=["503", "500", "408", "dropped-connection", "timeout"],
)
def test_transient_submit_failure_then_success(app, arm, fault):
    arm.default = Scenario(submit_faults=[fault])
    request = {"resourceUri": new_resource_uri(), "requestId": "r-transient"}
    events = one_request(app, request)
    assert types(events) == ["Accepted", "Succeeded"]
    assert len(arm.requests(method="POST")) >= 2


def test_failed_token_request_is_transient(app, arm, identity):
    identity.fail_next(1, status=500)
    request = {"resourceUri": new_resource_uri(), "requestId": "r-token"}
    events = one_request(app, request)
    assert types(events) == ["Accepted", "Succeeded"]
    assert identity.failures_served == 1


def test_5xx_storm_on_submit_ends_in_retries_exhausted(app, arm):
    arm.default = Scenario(submit=Fault.arm_error(503, "ServiceUnavailable", "try later"))
    request = {"resourceUri": new_resource_uri(), "requestId": "r-storm"}
    events = one_request(app, request, timeout=30)
    assert types(events) == ["Failed"]
    assert_event_shape(events[0], request, "Failed")
    error = events[0]["data"]["error"]
    assert error["code"] == "RetriesExhausted"
    assert error["details"][0]["code"] == "ServiceUnavailable"  # the last error is carried
    deliveries = app.host.stats[SUBMIT]
    assert deliveries.invocations == 5  # maxDequeueCount deliveries, the last one answers
    assert len(arm.requests(method="POST")) == 5 * 3
    assert app.count(app.poison_queue) == 0
    assert app.count(app.requests_queue) == 0


def test_crashing_submit_lands_in_poison_and_becomes_retries_exhausted(app, arm):
    # the tracking queue is gone, so every delivery crashes after ARM accepted the deletion
    app.tracking_queue.delete_queue()
    request = {"resourceUri": new_resource_uri(), "requestId": "r-crash"}
    events = one_request(app, request, timeout=30)
    # the first delivery noted the accepted operation in the VM's turn: the later ones (and the
    # poison step) follow it instead of POSTing again, and fail to track it as the first one did
    assert set(types(events)) == {"Accepted", "Failed"} and types(events)[-1] == "Failed", types(events)
    assert len({e["id"] for e in events}) == 2  # repeats of the Accepted carry one id
    assert events[-1]["data"]["error"]["code"] == "RetriesExhausted"
    assert app.host.stats[SUBMIT].poisoned == 1
    assert len(arm.requests(method="POST")) == 1


# ---------------------------------------------------------------- tracking and polling


def test_tracking_message_is_invisible_until_retry_after(app, arm):
    arm.default = Scenario(retry_after=3, done_after_polls=0)
    app.send({"resourceUri": new_resource_uri(), "requestId": "r-visibility"})
    app.deliver()
    assert types(app.events()) == ["Accepted"]
    assert app.tracking_queue.get_queue_properties().approximate_message_count == 1
    assert app.count(app.tracking_queue) == 0  # not visible yet
    app.poll()
    assert arm.requests(method="GET") == []
    time.sleep(3.2)
    assert app.count(app.tracking_queue) == 1
    app.poll()
    assert types(app.events()) == ["Accepted", "Succeeded"]


@pytest.mark.parametrize(
    ("final", "outcome", "code"),
    [("Succeeded", "Succeeded", None), ("Failed", "Failed", "CheckpointDeleteFailed"), ("Canceled", "Failed", None)],
)
def test_azure_async_operation_in_progress_then_final(app, arm, final, outcome, code):
    arm.default = Scenario(submit="accepted_async", done_after_polls=2, final=final)
    request = {"resourceUri": new_resource_uri(), "checkpointId": "cp-async", "requestId": f"r-async-{final}"}
    events = one_request(app, request)
    assert types(events) == ["Accepted", outcome]
    assert_event_shape(events[1], request, outcome)
    gets = [g for g in arm.requests(method="GET") if "/locations/" in g.path]  # status reads, not instance reads
    assert len(gets) == 3 and all("operationStatuses" in g.path for g in gets)  # the async URL is preferred
    assert events[1]["data"]["operationUrl"] == events[0]["data"]["operationUrl"]
    assert "operationResults" in events[0]["data"]["operationUrl"]  # the Location
    if final == "Failed":
        assert events[1]["data"]["error"]["code"] == code
    if final == "Canceled":
        assert events[1]["data"]["error"]["code"] in ("OperationCanceled", "CheckpointDeleteFailed")


def test_location_error_response_is_failed_with_arms_error(app, arm):
    arm.default = Scenario(done_after_polls=1, final="Failed", error={"code": "CheckpointInUse", "message": "busy"})
    request = {"resourceUri": new_resource_uri(), "requestId": "r-loc-failed"}
    events = one_request(app, request)
    assert types(events) == ["Accepted", "Failed"]
    assert events[1]["data"]["error"]["code"] == "CheckpointInUse"
    assert events[1]["data"]["pollCount"] == 2


def test_5xx_with_error_response_while_polling_is_failed_with_arms_error(app, arm):
    arm.default = Scenario(final=Fault.arm_error(500, "InternalOperationError", "it broke"))
    events = one_request(app, {"resourceUri": new_resource_uri(), "requestId": "r-500-body"})
    assert types(events) == ["Accepted", "Failed"]
    assert events[1]["data"]["error"]["code"] == "InternalOperationError"


def test_429_and_5xx_while_polling_are_retried(app, arm):
    arm.default = Scenario(poll_faults=[Fault.throttled(1), Fault(status=503), Fault.dropped()], done_after_polls=1)
    events = one_request(app, {"resourceUri": new_resource_uri(), "requestId": "r-poll-transient"})
    assert types(events) == ["Accepted", "Succeeded"]
    assert len(arm.requests(method="GET")) == 5


def test_5xx_storm_while_polling_ends_in_retries_exhausted_after_the_failure_window(make_app, arm):
    app = make_app(POLL_FAILURE_WINDOW_SECONDS="3")
    arm.default = Scenario(final=Fault(status=500))  # no ARM error body: never a final answer
    events = one_request(app, {"resourceUri": new_resource_uri(), "requestId": "r-poll-storm"})
    assert types(events) == ["Accepted", "Failed"]
    error = events[1]["data"]["error"]
    assert error["code"] == "RetriesExhausted"
    assert error["details"][0]["code"] == "HttpError"
    gets = [r for r in arm.requests(method="GET") if "/locations/" in r.path]
    assert events[1]["data"]["pollCount"] == len(gets) >= 2
    assert gets[-1].time - gets[0].time >= 2.5  # failures went on for the window (3 s) before the end


def test_slow_status_answers_time_out_and_are_retried(app, arm):
    arm.default = Scenario(poll_faults=[Fault.slow(3.0)], done_after_polls=0)
    events = one_request(app, {"resourceUri": new_resource_uri(), "requestId": "r-poll-slow"})
    assert types(events) == ["Accepted", "Succeeded"]


def test_operation_older_than_the_timeout_fails(make_app, arm):
    app = make_app(OPERATION_TIMEOUT_SECONDS="2")
    arm.default = Scenario(done_after_seconds=600)
    events = one_request(app, {"resourceUri": new_resource_uri(), "requestId": "r-timeout"})
    assert types(events) == ["Accepted", "Failed"]
    assert events[1]["data"]["error"]["code"] == "OperationTimedOut"
    assert app.count(app.tracking_queue) == 0


def test_redirect_while_polling_fails_and_is_not_followed(app, arm):
    target = arm.other_host_endpoint + "/elsewhere"
    arm.default = Scenario(final=Fault(status=302, location=target))
    events = one_request(app, {"resourceUri": new_resource_uri(), "requestId": "r-302"})
    assert types(events) == ["Accepted", "Failed"]
    assert "redirect" in events[1]["data"]["error"]["message"]
    assert arm.other_host_received == []


def test_redirect_while_polling_fails_even_when_the_checkpoint_is_gone(app, arm):
    # the contract: a 3xx where a status was expected ends the operation Failed (no verification)
    uri = new_resource_uri()
    arm.set_checkpoints(uri, ["cp-302"])
    arm.default = Scenario(final=Fault(status=302, location=arm.other_host_endpoint + "/elsewhere"))
    events = one_request(app, {"resourceUri": uri, "checkpointId": "cp-302", "requestId": "r-302-gone"})
    assert types(events) == ["Accepted", "Failed"]
    assert "verification" not in events[1]["data"]


def test_a_202_without_a_status_url_is_accepted_then_failed(app, arm):
    # the contract: exactly one Accepted once ARM answered 202
    arm.default = Scenario(submit=Fault(status=202))
    events = one_request(app, {"resourceUri": new_resource_uri(), "checkpointId": "cp", "requestId": "r-202-bare"})
    assert types(events) == ["Accepted", "Failed"]
    assert events[1]["data"]["error"]["code"] == "OperationFailed"


# ---------------------------------------------------------------- untrusted status URLs


def test_untrusted_location_on_submit_is_accepted_then_failed_without_a_token(app, arm):
    arm.default = Scenario(location_base=arm.other_host_endpoint)
    request = {"resourceUri": new_resource_uri(), "requestId": "r-untrusted"}
    events = one_request(app, request)
    assert types(events) == ["Accepted", "Failed"]
    assert events[1]["data"]["error"]["code"] == "UntrustedOperationUrl"
    assert app.tracking_queue.get_queue_properties().approximate_message_count == 0
    app.poll()
    assert arm.other_host_received == []
    assert arm.other_host_connections == 0


def test_untrusted_async_operation_url_is_never_sent_a_token(app, arm):
    arm.default = Scenario(submit="accepted_async", location_base=arm.other_host_endpoint)
    events = one_request(app, {"resourceUri": new_resource_uri(), "requestId": "r-untrusted-async"})
    assert types(events) == ["Accepted", "Failed"]
    assert events[1]["data"]["error"]["code"] == "UntrustedOperationUrl"
    assert arm.other_host_received == []


# ---------------------------------------------------------------- clients are reused


def test_one_token_and_one_connection_serve_many_calls(app, arm, identity):
    arm.default = Scenario(done_after_polls=1)
    for i in range(6):  # one request after the other, so that no call needs a second connection
        one_request(app, {"resourceUri": new_resource_uri(), "requestId": f"r-reuse-{i}"})
    assert len(arm.received) == 6 * 3  # a POST and two status GETs each
    assert identity.tokens_issued == 1
    assert arm.connections_opened == 1


def test_no_token_in_logs_or_events(app, arm, caplog):
    caplog.set_level("DEBUG")
    events = one_request(app, {"resourceUri": new_resource_uri(), "requestId": "r-logs", "correlationId": "c-logs"})
    token = app.services.arm._tokens.token(5.0)  # the cached one
    assert token not in caplog.text
    assert token not in json.dumps(events)
    # every line about this request, from the ARM client and the event writer among others
    app_lines = [r.getMessage() for r in caplog.records if r.name.startswith("shared.") and r.name != "shared.poll"]
    assert len(app_lines) >= 4  # a POST, a GET, two events
    assert all(line.startswith("requestId=r-logs correlationId=c-logs: ") for line in app_lines), app_lines


def test_a_tracking_message_outlives_an_event_that_could_not_be_written(app, arm):
    arm.default = Scenario(done_after_polls=0)
    app.send({"resourceUri": new_resource_uri(), "requestId": "r-event-first"})
    app.deliver()
    assert types(app.events()) == ["Accepted"]
    app.events_queue.delete_queue()  # the Succeeded event cannot be written now
    app.poll()
    assert len(arm.requests(method="GET")) == 1  # ARM said the operation succeeded...
    # ...but without its event the operation stays tracked (hidden for the lease, then polled again)
    assert app.tracking_queue.get_queue_properties().approximate_message_count == 1


def test_tracking_messages_and_events_never_expire(app, arm):
    arm.default = Scenario(retry_after=0, done_after_polls=5)
    app.send({"resourceUri": new_resource_uri(), "requestId": "r-ttl"})
    app.deliver()
    (tracked,) = app.tracking_queue.peek_messages()
    (event,) = app.events_queue.peek_messages()
    for message in (tracked, event):
        assert message.expires_on.year >= 9999  # the default time to live would be 7 days
