"""Text from ARM is cleaned and bounded before it is stored: events stay writable and readable."""

from __future__ import annotations

import json

import pytest

from localdev.arm_emulator import Fault, Scenario
from shared.arm_answers import parse_retry_after
from shared.cleaning import CUT, MAX_EVENT_BYTES, MAX_TEXT_BYTES, clean_error, clean_text, event_size, fit_event
from shared.errors import retries_exhausted
from shared.events import outcome_event
from tests.support.app_harness import new_resource_uri

UNSAFE = ["\ud800", "\udfff", "\ufffe", "\uffff", "\U0001fffe", "\ufdd0", "\x00", "\x1b"]


@pytest.mark.parametrize("char", UNSAFE)
def test_unsafe_characters_become_the_replacement_character(char):
    cleaned = clean_text(f"a{char}b")
    assert cleaned == "a\ufffdb"
    cleaned.encode("utf-8")  # strict: no lone surrogate is left


def test_a_long_text_is_cut_at_4_kib_with_a_visible_marker():
    cleaned = clean_text("é" * 10_000)
    assert cleaned.endswith(CUT)
    assert len(cleaned.encode("utf-8")) <= MAX_TEXT_BYTES
    assert clean_text("short") == "short"


def test_an_error_of_any_shape_becomes_the_contracts_error_object():
    error = clean_error(
        {
            "code": 42,
            "message": {"not": "text"},
            "details": [{"code": "X", "details": [{"code": "Y"}] * 100}, "not-an-object"],
            "additionalInfo": [{"type": "T", "info": {"k": float("nan"), "n": 10**400}}],
            "extra": "dropped",
        }
    )
    assert set(error) == {"code", "message", "target", "details", "additionalInfo"}
    assert (error["code"], error["message"], error["target"]) == ("42", None, None)
    assert len(error["details"]) == 1 and len(error["details"][0]["details"]) == 32
    info = error["additionalInfo"][0]["info"]
    assert info["k"] is None and isinstance(info["n"], str)
    json.dumps(error, allow_nan=False)


def test_an_event_over_48_kib_loses_details_first_and_says_so():
    details = [{"code": f"D{i}", "message": "m" * 4000} for i in range(30)]
    error = clean_error({"code": "Big", "message": "the operation failed", "details": details})
    event = outcome_event("Failed", {"requestId": "r", "resourceUri": new_resource_uri()}, 0.0, error)
    assert event_size(event) > MAX_EVENT_BYTES
    fitted = fit_event(event)
    assert event_size(fitted) < MAX_EVENT_BYTES
    assert fitted["data"]["error"]["details"] == []
    assert CUT in fitted["data"]["error"]["message"]
    assert fit_event(fitted) is fitted  # a small event is left as it is


def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for member in value.values():
            yield from strings(member)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def test_a_long_message_that_loses_its_details_stays_within_4_kib():
    details = [{"code": f"D{i}", "message": "m" * 4000} for i in range(30)]
    error = clean_error({"code": "Big", "message": "é" * 10_000, "details": details})
    fitted = fit_event(outcome_event("Failed", {"requestId": "r", "resourceUri": new_resource_uri()}, 0.0, error))
    assert CUT in fitted["data"]["error"]["message"]
    assert max(len(s.encode("utf-8")) for s in strings(fitted)) <= MAX_TEXT_BYTES


def test_retries_exhausted_with_a_long_last_error_stays_within_4_kib():
    last = clean_error({"code": "ServiceUnavailable", "message": "x" * 10_000})
    error = retries_exhausted(last, "3 tries in each of 5 deliveries")
    assert error["message"].startswith("transient failures did not stop") and error["message"].endswith(CUT)
    assert max(len(s.encode("utf-8")) for s in strings(error)) <= MAX_TEXT_BYTES


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1" * 309, 86400.0), ("9" * 10, 86400.0), ("-5", None), ("1e5", None), ("Tue, 99 Foo 99999 99:99:99 GMT", None)],
)
def test_retry_after_parsing_never_raises(value, seconds):
    assert parse_retry_after(value) == seconds


def test_arm_error_text_that_no_queue_could_carry_still_makes_a_readable_event(app, arm):
    # Before, this event could not be written (or broke every later peek of the events queue on Azurite).
    message = "bad \ud800 and \ufffe " + "x" * 70_000
    arm.default = Scenario(submit=Fault.arm_error(400, "Bad\ufffeCode", message, target="id\udfff"))
    request = {"resourceUri": new_resource_uri(), "checkpointId": "cp", "requestId": "r-dirty"}
    app.send(request)
    [event] = app.run(["r-dirty"])["r-dirty"]
    error = event["data"]["error"]
    assert (error["code"], error["target"]) == ("Bad\ufffdCode", "id\ufffd")
    assert error["message"].startswith("bad \ufffd and \ufffd ") and error["message"].endswith(CUT)
    assert len(error["message"].encode("utf-8")) <= MAX_TEXT_BYTES
    assert event_size(event) < MAX_EVENT_BYTES
    app.events_queue.send_message("after")
    assert [m.content for m in app.events_queue.peek_messages()] == ["after"]  # the queue is still readable


def test_a_309_digit_retry_after_on_submit_is_waited_as_a_long_pause(app, arm):
    # Before, parsing it raised OverflowError and the delivery crashed.
    arm.default = Scenario(submit_faults=[Fault(status=429, retry_after="1" * 309)], submit="done_204")
    request = {"resourceUri": new_resource_uri(), "requestId": "r-huge-retry-after"}
    app.send(request)
    events = app.run(["r-huge-retry-after"], timeout=20)["r-huge-retry-after"]
    assert [e["type"] for e in events] == ["ScVmm.CheckpointDelete.Succeeded"]
    assert app.count(app.poison_queue) == 0


def test_a_huge_transient_error_on_a_status_url_keeps_the_operation_tracked(app, arm):
    # Before, the whole error went into the tracking message: past 64 KiB it could not be written,
    # and the operation was stuck until its deadline.
    inner = [{"code": "Inner", "message": "y" * 5000}] * 10
    details = [{"code": f"D{i}", "message": "m" * 5000, "details": inner} for i in range(32)]
    busy = Fault(status=503, retry_after=1, error={"code": "ServerBusy", "message": "busy", "details": details})
    arm.default = Scenario(retry_after=0, poll_faults=[busy])
    request = {"resourceUri": new_resource_uri(), "checkpointId": "cp", "requestId": "r-huge-error"}
    app.send(request)
    events = app.run(["r-huge-error"], timeout=20)["r-huge-error"]
    assert [e["type"] for e in events] == ["ScVmm.CheckpointDelete.Accepted", "ScVmm.CheckpointDelete.Succeeded"]
