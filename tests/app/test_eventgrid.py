"""Optional publishing of every event to an Event Grid topic (CloudEvents, managed identity),
against a local HTTPS stand-in of the topic's publish endpoint."""

import json
import time

from localdev.arm_emulator import Fault, Scenario
from tests.support.app_harness import new_resource_uri


def _outbox(app):
    return app.services.forwarder._outbox


def test_every_event_also_goes_to_the_topic_with_an_eventgrid_token(make_app, arm, topic, identity):
    topic.clear()
    app = make_app(EVENTGRID_TOPIC_ENDPOINT=topic.endpoint)
    arm.default = Scenario(done_after_polls=1)
    app.send({"resourceUri": new_resource_uri(), "requestId": "eg-1", "correlationId": "c"})
    queue_events = app.run(["eg-1"])["eg-1"]
    assert [e["type"] for e in queue_events] == ["ScVmm.CheckpointDelete.Accepted", "ScVmm.CheckpointDelete.Succeeded"]
    assert topic.events == queue_events  # the same CloudEvents, as written to the queue
    assert topic.rejected == []
    assert ("https://eventgrid.azure.net", None) in [(r.rstrip("/"), c) for r, c in identity.issued]


def test_an_outage_of_the_topic_loses_no_event(make_app, arm, topic):
    topic.clear()
    # tries a second apart (the outbox is also forwarded beside each run): enough to outlast the outage
    app = make_app(EVENTGRID_TOPIC_ENDPOINT=topic.endpoint, publish_tries=60)
    arm.default = Scenario(done_after_polls=1)
    topic.outage = True
    ids = ["eg-out-1", "eg-out-2"]
    for request_id in ids:
        app.send({"resourceUri": new_resource_uri(), "requestId": request_id})
    by_request = app.run(ids)
    queue_events = [e for rid in ids for e in by_request[rid]]
    assert len(queue_events) == 4  # the queue copy is written whatever the topic does
    assert topic.events == []
    assert topic.refused_during_outage >= 4
    assert _outbox(app).get_queue_properties().approximate_message_count == 4

    topic.outage = False
    deadline = time.monotonic() + 15
    while len(topic.events) < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
        app.poll()  # each poll run publishes what waits in the outbox
    assert sorted(e["id"] for e in topic.events) == sorted(e["id"] for e in queue_events)
    assert sorted(json.dumps(e, sort_keys=True) for e in topic.events) == sorted(
        json.dumps(e, sort_keys=True) for e in queue_events
    )
    assert _outbox(app).get_queue_properties().approximate_message_count == 0
    assert topic.rejected == []


def test_events_that_never_get_through_stay_on_the_queue(make_app, arm, topic):
    topic.clear()
    app = make_app(EVENTGRID_TOPIC_ENDPOINT=topic.endpoint)
    arm.default = Scenario(submit="done_200")
    topic.outage = True
    app.send({"resourceUri": new_resource_uri(), "requestId": "eg-never"})
    app.run(["eg-never"])
    deadline = time.monotonic() + 15
    while _outbox(app).get_queue_properties().approximate_message_count and time.monotonic() < deadline:
        time.sleep(0.5)
        app.poll()
    assert _outbox(app).get_queue_properties().approximate_message_count == 0  # the budget (3 tries) is spent
    assert topic.events == []
    assert [e["id"] for e in app.events()] == ["eg-never:succeeded"]
    [dead] = [json.loads(m.content) for m in _deadletter(app).peek_messages(max_messages=32)]
    assert dead["event"]["id"] == "eg-never:succeeded"  # kept, with the reason, where an operator sees it
    assert dead["reason"].startswith("not published after 3 tries")
    topic.outage = False


def _deadletter(app):
    return app.services.forwarder._deadletter


def _forward_until(app, done, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        app.poll()
        time.sleep(0.3)


def test_one_event_the_topic_refuses_never_takes_good_ones_with_it(make_app, arm, topic):
    # Before, a refused batch was retried whole until its budget was spent, then dropped: good events too.
    topic.clear()
    app = make_app(EVENTGRID_TOPIC_ENDPOINT=topic.endpoint, publish_tries=60)  # the outage spends no budget
    arm.default = Scenario(submit="done_204")
    topic.reject_ids({"eg-bad:succeeded"})
    topic.outage = True  # the events wait in the outbox, so that one batch holds all of them
    ids = ["eg-good-1", "eg-bad", "eg-good-2"]
    for request_id in ids:
        app.send({"resourceUri": new_resource_uri(), "requestId": request_id})
    app.run(ids)
    topic.outage = False
    _forward_until(app, lambda: _outbox(app).get_queue_properties().approximate_message_count == 0)
    assert sorted(e["id"] for e in topic.events) == ["eg-good-1:succeeded", "eg-good-2:succeeded"]
    [dead] = [json.loads(m.content) for m in _deadletter(app).peek_messages(max_messages=32)]
    assert dead["event"]["id"] == "eg-bad:succeeded"
    assert dead["reason"].startswith("HTTP 400")


def test_an_outbox_message_that_is_not_a_record_goes_to_the_dead_letter_queue(make_app, topic):
    topic.clear()
    app = make_app(EVENTGRID_TOPIC_ENDPOINT=topic.endpoint)
    _outbox(app).send_message("[" * 5000)
    app.poll()
    [dead] = [json.loads(m.content) for m in _deadletter(app).peek_messages(max_messages=32)]
    assert dead["reason"] == "not an outbox record"
    assert _outbox(app).get_queue_properties().approximate_message_count == 0


def test_events_reach_the_topic_while_a_poll_run_is_busy(make_app, arm, topic):
    # Before, the outbox was only forwarded after the poll run, which may take minutes when busy.
    import threading

    topic.clear()
    app = make_app(EVENTGRID_TOPIC_ENDPOINT=topic.endpoint, arm_timeout=(2.0, 10.0))
    arm.default = Scenario(retry_after=0, poll_faults=[Fault.slow(4.0)])  # each status read takes 4 s
    app.send({"resourceUri": new_resource_uri(), "requestId": "eg-slow-op"})
    deadline = time.monotonic() + 10
    while not app.events_of("eg-slow-op") and time.monotonic() < deadline:
        app.deliver()
        time.sleep(0.2)
    assert [e["type"] for e in app.events_of("eg-slow-op")] == ["ScVmm.CheckpointDelete.Accepted"]
    run = threading.Thread(target=app.services.poll)
    run.start()
    seen_while_busy = False
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:
        if topic.events:
            seen_while_busy = run.is_alive()  # still reading the slow status URL
            break
        time.sleep(0.1)
    run.join()
    assert seen_while_busy
    assert [e["id"] for e in topic.events][:1] == ["eg-slow-op:accepted"]
