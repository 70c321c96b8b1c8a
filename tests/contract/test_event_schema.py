"""The events the app writes against schemas/event.schema.json.

What is proved here: every event the app's own submit, poll and poison steps write (with and without
optional fields, with the app's error codes and with ARM's errors) validates against
schemas/event.schema.json and its per-type schema (#accepted, #succeeded, #failed); hand-broken events
do not.

Hypothesis runs derandomized (fixed examples, no example database) so CI sees the same cases each run.
"""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import app_error
from tests.support.contract import (
    ERRORS,
    EVENT,
    EVENT_OF_STATUS,
    INVALID_SOURCE,
    SUBS,
    TRACEPARENT,
    URI,
    assert_valid_event,
    events_for,
    load,
)
from tests.support.derandomized import HYPOTHESIS
from tests.support.request_strategies import request_objects

# Every event the end-to-end tests read off the Azurite events queue (the app's real submit, poll and
# poison steps against the ARM emulator) is checked against schemas/event.schema.json by
# AppHarness.events() (tests/support/app_harness.py). Here: the app's event builder on generated
# requests and on every kind of error an event can carry.


@pytest.mark.parametrize("error", ERRORS)
@pytest.mark.parametrize(
    "request_object",
    [
        {
            "resourceUri": URI,
            "checkpointId": "cp-1",
            "requestId": "req-1",
            "correlationId": "c-1",
            "traceparent": TRACEPARENT,
        },
        {"resourceUri": URI},
        {"resourceUri": SUBS + "/resourceGroups/r/vm1", "requestId": "req-2", "correlationId": "c-2"},
        {"requestId": "x" * 300, "checkpointId": ""},
    ],
    ids=["every field", "only resourceUri", "invalid resourceUri", "nothing usable"],
)
def test_events_of_every_path_validate(error, request_object):
    events = events_for(json.dumps(request_object), ERRORS[error])
    for event in events:
        assert_valid_event(event)


def test_events_for_generated_requests_validate(quiet_app_logs):
    @settings(max_examples=200, **HYPOTHESIS)
    @given(request_objects(), st.sampled_from(sorted(ERRORS)))
    def check(obj, error):
        for event in events_for(json.dumps(obj), ERRORS[error]):
            assert_valid_event(event)

    check()


def broken(name: str, change) -> dict:
    event = copy.deepcopy(load(name))
    change(event)
    return event


BROKEN_EVENTS = {
    "Failed without error": broken("event-failed.json", lambda e: e["data"].pop("error")),
    "error without details": broken("event-failed.json", lambda e: e["data"]["error"].pop("details")),
    "error with neither code nor message": broken(
        "event-failed.json", lambda e: e["data"]["error"].update(code=None, message="")
    ),
    "Accepted without submittedAt": broken("event-accepted.json", lambda e: e["data"].pop("submittedAt")),
    "Accepted with an error": broken("event-accepted.json", lambda e: e["data"].update(error=app_error("X", "y"))),
    "Succeeded without completedAt": broken("event-succeeded.json", lambda e: e["data"].pop("completedAt")),
    "id with the wrong suffix": broken("event-succeeded.json", lambda e: e.update(id="req-42:accepted")),
    "id without a requestId": broken("event-failed.json", lambda e: e.update(id=":failed")),
    "status not matching type": broken("event-succeeded.json", lambda e: e["data"].update(status="Failed")),
    "unknown type": broken("event-succeeded.json", lambda e: e.update(type="ScVmm.CheckpointDelete.Deleted")),
    "specversion 0.3": broken("event-accepted.json", lambda e: e.update(specversion="0.3")),
    "time not UTC": broken("event-accepted.json", lambda e: e.update(time="2026-11-27T03:39:40.212+01:00")),
    "invalid traceparent": broken(
        "event-accepted.json", lambda e: e.update(traceparent="00-" + "0" * 32 + "-00f067aa0ba902b7-01")
    ),
    "negative pollCount": broken("event-succeeded.json", lambda e: e["data"].update(pollCount=-1)),
    "subject without checkpointId": broken("event-succeeded.json", lambda e: e["data"].pop("checkpointId")),
    "checkpointId without subject": broken("event-succeeded.json", lambda e: e.pop("subject")),
    "invalid-request source with a resourceUri": broken("event-failed.json", lambda e: e.update(source=INVALID_SOURCE)),
    "no resourceUri but a resource source": broken("event-failed-invalid-request.json", lambda e: e.update(source=URI)),
    "data without requestId": broken("event-accepted.json", lambda e: e["data"].pop("requestId")),
    "datacontenttype text": broken("event-accepted.json", lambda e: e.update(datacontenttype="text/plain")),
}


@pytest.mark.parametrize("name", BROKEN_EVENTS)
def test_broken_events_are_rejected(name):
    event = BROKEN_EVENTS[name]
    assert not EVENT.is_valid(event)
    assert not any(v.is_valid(event) for v in EVENT_OF_STATUS.values())
