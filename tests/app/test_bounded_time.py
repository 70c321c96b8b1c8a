"""Each step ends in bounded time whatever hangs: ARM, the identity endpoint, storage, Event Grid.

A hanging service is a real one: the ARM emulator answering later than any timeout, Azurite
stopped with SIGSTOP, or a loopback address that takes connections and never answers.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from azure.core.exceptions import AzureError

import shared.queues
import shared.runtime
from localdev.arm_emulator import Fault, Scenario
from shared.budgets import Budgets
from shared.submit import SubmitDeferred
from tests.support.app_harness import new_resource_uri


def timed(step):
    started = time.monotonic()
    try:
        outcome = step()
    except Exception as exc:  # the outcome of a step may be an exception; the test looks at it
        outcome = exc
    return time.monotonic() - started, outcome


def request_text(request_id: str, checkpoint_id: str | None = "cp-1") -> str:
    return json.dumps({"resourceUri": new_resource_uri(), "checkpointId": checkpoint_id, "requestId": request_id})


def test_a_submit_ends_within_its_budget_while_arm_hangs(make_app, arm):
    # Without the deadline each POST would wait for the 30 s read timeout, three times.
    app = make_app(budgets=Budgets(submit=4.0, storage_reserve=0.5), arm_timeout=(2.0, 30.0))
    arm.default = Scenario(submit_faults=[Fault.slow(60.0)] * 5)
    elapsed, outcome = timed(lambda: app.services.submitter.handle(request_text("r-arm-hangs"), "m-1", 1))
    assert isinstance(outcome, SubmitDeferred), outcome
    assert elapsed < 4.5
    assert len(arm.requests(method="POST")) >= 1


def test_a_poll_run_ends_within_its_budget_while_arm_hangs(make_app, arm):
    # Without the deadline each read would wait for the 30 s read timeout.
    app = make_app(budgets=Budgets(poll_run=8.0, poll_lease=30.0, storage_reserve=1.0), arm_timeout=(2.0, 30.0))
    arm.default = Scenario(retry_after=0, poll_faults=[Fault.slow(60.0)])
    for i in range(3):
        app.send({"resourceUri": new_resource_uri(), "checkpointId": "cp", "requestId": f"r-poll-hangs-{i}"})
    deadline = time.monotonic() + 10
    while app.count(app.tracking_queue) < 3 and time.monotonic() < deadline:
        app.deliver()
        time.sleep(0.2)
    assert app.count(app.tracking_queue) == 3
    elapsed, outcomes = timed(app.services.poller.run)
    assert elapsed < 8.5, outcomes
    assert outcomes["transient"] == 3  # each read timed out, within the run's budget
    assert app.count(app.tracking_queue) == 0  # ... and its operation waits for a later run


def test_a_submit_waits_a_bounded_time_for_a_token_from_a_hung_identity_endpoint(make_app, arm, blackhole):
    # Without the token cache's bound, the credential waits for its own (long) timeouts, under a lock.
    host, port = blackhole
    app = make_app(budgets=Budgets(token_wait=1.0), IDENTITY_ENDPOINT=f"http://{host}:{port}/msi/token")
    elapsed, outcome = timed(lambda: app.services.submitter.handle(request_text("r-idp-hangs"), "m-2", 1))
    assert isinstance(outcome, SubmitDeferred), outcome
    assert "TokenRequestFailed" in str(outcome)
    assert elapsed < 4.0  # three tries, each waiting at most token_wait
    assert arm.requests(method="POST") == []  # no call went without a token


def test_submit_and_poll_end_in_bounded_time_while_storage_hangs(make_app, arm, azurite, monkeypatch):
    # Without bounded storage clients the SDK retries a hung call for minutes.
    monkeypatch.setattr(shared.queues, "STORAGE_TIMEOUT", (1.0, 1.0))  # the queues' and the table's transport
    app = make_app(budgets=Budgets(poll_run=6.0))
    arm.default = Scenario(retry_after=0)
    os.kill(azurite.pid, signal.SIGSTOP)
    try:
        submit_time, submitted = timed(lambda: app.services.submitter.handle(request_text("r-storage"), "m-3", 1))
        poll_time, _ = timed(app.services.poller.run)
    finally:
        os.kill(azurite.pid, signal.SIGCONT)
    assert isinstance(submitted, AzureError), submitted  # the delivery fails and the queue delivers it again
    assert submit_time < 8.0
    assert poll_time < 8.0


@pytest.fixture
def quick_eventgrid(monkeypatch):
    monkeypatch.setattr(shared.runtime, "EVENTGRID_TIMEOUT", (1.0, 1.0))


def test_events_never_wait_on_a_hung_event_grid_topic(make_app, arm, blackhole, quick_eventgrid):
    # Before, each event write called the topic inline and waited for it (azure-core's read timeout: 300 s).
    host, port = blackhole
    app = make_app(budgets=Budgets(outbox_run=2.0), EVENTGRID_TOPIC_ENDPOINT=f"https://{host}:{port}/api/events")
    arm.default = Scenario(submit="done_204")
    elapsed, outcome = timed(lambda: app.services.submitter.handle(request_text("r-topic-hangs"), "m-4", 1))
    assert outcome == "succeeded"
    assert elapsed < 1.0
    assert [e["type"] for e in app.events_of("r-topic-hangs")] == ["ScVmm.CheckpointDelete.Succeeded"]
    elapsed, _ = timed(app.services.poll)  # operations, then the outbox within its own budget
    assert elapsed < 2.0 + 2.0 + 1.0  # the outbox budget, one publish's timeouts, slack
    outbox = app.services.forwarder._outbox
    deadline = time.monotonic() + 5
    while not (waiting := outbox.peek_messages(max_messages=32)) and time.monotonic() < deadline:
        time.sleep(0.2)  # it waits out its backoff
    [kept] = [json.loads(m.content) for m in waiting]  # kept for a later run, its failed tries counted
    assert kept["event"]["id"] == "r-topic-hangs:succeeded" and kept["attempts"] >= 1
