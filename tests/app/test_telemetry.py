"""OpenTelemetry traces and metrics (shared/telemetry.py) on the real stand-ins, read back with the
SDK's in-memory exporters: one trace per deletion from submission to completion, the spans'
attributes, the counters after a mixed batch, and nothing at all without the connection string."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import azure.monitor.opentelemetry
import pytest
from azure.identity import ManagedIdentityCredential
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from localdev.arm_emulator import Fault, Scenario
from localdev.trace_report import print_metrics, print_trace
from shared import telemetry
from shared.runtime import get_services, install_services
from shared.tracking import Operation
from tests.support.app_harness import new_resource_uri
from tests.support.events import one_request, types

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
REQUEST_TRACE_ID = int("0af7651916cd43dd8448eb211c80319c", 16)
REQUEST_SPAN_ID = int("b7ad6b7169203331", 16)


@dataclass
class Captured:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader

    def of_request(self, request_id: str) -> list:
        """Every finished span in the trace of the request's submit span."""
        finished = self.spans.get_finished_spans()
        submit = [s for s in finished if s.name == "checkpoint.submit" and s.attributes.get("requestId") == request_id]
        assert len(submit) == 1, [s.name for s in finished]
        trace_id = submit[0].context.trace_id
        return [s for s in finished if s.context.trace_id == trace_id]

    def points(self, name: str) -> list:
        found = []
        for resource in self.reader.get_metrics_data().resource_metrics:
            for scope in resource.scope_metrics:
                found += [p for m in scope.metrics if m.name == name for p in m.data.data_points]
        return found

    def counts(self, name: str) -> dict:
        """A counter's value per attribute set (sorted (key, value) tuples)."""
        return {tuple(sorted(p.attributes.items())): p.value for p in self.points(name)}


@pytest.fixture
def otel():
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry.configure_telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield Captured(spans, reader)
    telemetry.reset_telemetry()
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture
def traced_app(otel, make_app):
    return make_app()  # built after the in-memory providers are in place (the in-flight gauge watches it)


def by_name(spans) -> dict[str, list]:
    named: dict[str, list] = {}
    for span in sorted(spans, key=lambda s: s.start_time):
        named.setdefault(span.name, []).append(span)
    return named


# ---------------------------------------------------------------- one trace per deletion


def test_one_trace_from_submission_to_completion(traced_app, otel, arm):
    arm.default = Scenario(done_after_polls=2, final="200")
    request = {"resourceUri": new_resource_uri(), "checkpointId": "cp-1", "requestId": "r-trace", "correlationId": "c"}
    events = one_request(traced_app, request)
    assert types(events) == ["Accepted", "Succeeded"]
    assert all("traceparent" not in e for e in events)  # the app's own trace context stays out of events

    named = by_name(otel.of_request("r-trace"))
    submit = named["checkpoint.submit"][0]
    polls = named["checkpoint.poll"]
    assert len(polls) == events[1]["data"]["pollCount"] == 3
    assert submit.parent is None  # no traceparent: a new trace
    assert {p.parent.span_id for p in polls} == {submit.context.span_id}
    assert [p.attributes["outcome"] for p in polls] == ["running", "running", "succeeded"]
    # each ARM call is a client span of the step that made it
    assert [s.parent.span_id for s in named["ARM POST deleteCheckpoint"]] == [submit.context.span_id]
    assert [s.parent.span_id for s in named["ARM GET status"]] == [p.context.span_id for p in polls]


def test_a_requests_traceparent_is_the_parent_of_the_whole_deletion(traced_app, otel, arm):
    arm.default = Scenario(submit="accepted_async", done_after_polls=1)
    request = {
        "resourceUri": new_resource_uri(),
        "checkpointId": "cp-2",
        "requestId": "r-tp",
        "traceparent": TRACEPARENT,
    }
    events = one_request(traced_app, request)
    assert [e["traceparent"] for e in events] == [TRACEPARENT, TRACEPARENT]  # the request's, unchanged

    spans = otel.of_request("r-tp")
    assert {s.context.trace_id for s in spans} == {REQUEST_TRACE_ID}
    submit = by_name(spans)["checkpoint.submit"][0]
    assert submit.parent.span_id == REQUEST_SPAN_ID and submit.parent.is_remote
    assert len(by_name(spans)["checkpoint.poll"]) == 2


def test_the_tracking_record_keeps_the_submit_spans_context(traced_app, otel, arm):
    arm.default = Scenario(done_after_polls=50)  # Retry-After 0: the record is visible at once
    traced_app.send({"resourceUri": new_resource_uri(), "checkpointId": "cp-3", "requestId": "r-record"})
    traced_app.deliver()
    (message,) = traced_app.tracking_queue.peek_messages()
    record = json.loads(message.content)
    submit = by_name(otel.spans.get_finished_spans())["checkpoint.submit"][0]
    context = submit.get_span_context()
    assert record["traceContext"] == f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    assert record["traceparent"] is None


def test_an_older_record_without_trace_context_joins_one_trace_from_its_first_read(make_app, arm):
    app = make_app()
    arm.default = Scenario(done_after_polls=2, final="204")
    app.send({"resourceUri": new_resource_uri(), "checkpointId": "cp-4", "requestId": "r-old"})
    app.deliver()  # telemetry off: the record is as records were before traceContext
    (peeked,) = app.tracking_queue.peek_messages()
    assert "traceContext" not in json.loads(peeked.content)

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry.configure_telemetry(tracer_provider=provider)
    try:
        events = app.run(["r-old"])["r-old"]
    finally:
        telemetry.reset_telemetry()
    assert types(events) == ["Accepted", "Succeeded"]
    polls = by_name(spans.get_finished_spans())["checkpoint.poll"]
    assert len(polls) == 3
    assert len({p.context.trace_id for p in polls}) == 1
    assert polls[0].parent is None
    assert {p.parent.span_id for p in polls[1:]} == {polls[0].context.span_id}


def test_records_load_with_and_without_trace_context():
    old = Operation("r", "/subscriptions/x", "https://arm/op", "https://arm/op", False, 1.0)
    text = old.to_message()
    assert "traceContext" not in text
    assert Operation.from_message(text).traceContext is None
    bad = json.loads(text) | {"traceContext": {"not": "a string"}}
    assert Operation.from_message(json.dumps(bad)).traceContext is None
    old.traceContext = TRACEPARENT
    loaded = Operation.from_message(old.to_message())
    assert loaded.traceContext == TRACEPARENT
    assert "traceContext" not in loaded.facts()


# ---------------------------------------------------------------- attributes


def test_span_attributes(traced_app, otel, arm):
    arm.default = Scenario(done_after_polls=1, final="200")
    request = {"resourceUri": new_resource_uri(), "checkpointId": "cp-5", "requestId": "r-attr", "correlationId": "c5"}
    one_request(traced_app, request)
    named = by_name(otel.of_request("r-attr"))
    expected = {k: request[k] for k in ("requestId", "correlationId", "resourceUri", "checkpointId")}
    for span in [*named["checkpoint.submit"], *named["checkpoint.poll"]]:
        assert {k: span.attributes.get(k) for k in expected} == expected
        assert span.kind == SpanKind.INTERNAL
    submit = named["checkpoint.submit"][0]
    assert submit.attributes["outcome"] == "accepted" and submit.attributes["status"] == "Accepted"
    assert [e.name for e in submit.events] == ["ScVmm.CheckpointDelete.Accepted"]
    last = named["checkpoint.poll"][-1]
    assert last.attributes["status"] == "Succeeded" and last.attributes["pollCount"] == 2
    arm_spans = [("ARM POST deleteCheckpoint", "POST", 202, "submit"), ("ARM GET status", "GET", 200, "status")]
    for name, method, status, call in arm_spans:
        span = named[name][-1]
        assert span.kind == SpanKind.CLIENT and span.attributes["arm.call"] == call
        assert span.attributes["http.request.method"] == method
        assert span.attributes["http.response.status_code"] == status
        assert len(span.attributes["x-ms-request-id"]) == 36  # the emulator's uuid
        assert "?" not in span.attributes["url.full"]  # no query, api-version or other


def test_a_failure_is_marked_on_its_spans(traced_app, otel, arm):
    arm.default = Scenario(submit=Fault.arm_error(400, "InvalidParameter", "no"))
    one_request(traced_app, {"resourceUri": new_resource_uri(), "requestId": "r-fail"})
    named = by_name(otel.of_request("r-fail"))
    submit, post = named["checkpoint.submit"][0], named["ARM POST deleteCheckpoint"][0]
    assert submit.attributes["outcome"] == "failed" and submit.attributes["error.code"] == "InvalidParameter"
    assert submit.status.status_code == StatusCode.ERROR
    assert post.attributes["http.response.status_code"] == 400 and post.attributes["error.type"] == "400"


# ---------------------------------------------------------------- metrics


def test_counters_after_a_mixed_batch(traced_app, otel, arm):
    scripts = {
        "polled": Scenario(done_after_polls=1, final="200"),
        "at-once": Scenario(submit="done_204"),
        "throttled": Scenario(submit_faults=[Fault.throttled(1)], done_after_polls=1),
        "rejected": Scenario(submit=Fault.arm_error(400, "InvalidParameter", "no")),
        "forbidden": Scenario(submit=Fault.arm_error(403, "AuthorizationFailed", "no")),
    }
    ids = []
    for name, scenario in scripts.items():
        uri = new_resource_uri(name)
        arm.script(uri, scenario)
        traced_app.send({"resourceUri": uri, "requestId": f"r-{name}"})  # no checkpoint: no verification
        ids.append(f"r-{name}")
    traced_app.send({"resourceUri": "/not/an/arm/id", "requestId": "r-invalid"})
    ids.append("r-invalid")
    traced_app.run(ids)

    assert otel.counts("checkpoint.requests") == {
        (("outcome", "succeeded"),): 3,
        (("error.code", "InvalidParameter"), ("outcome", "failed")): 1,
        (("error.code", "AuthorizationFailed"), ("outcome", "failed")): 1,
        (("error.code", "InvalidRequest"), ("outcome", "failed")): 1,
    }
    calls = otel.counts("arm.calls")
    submit_202 = (("http.response.status_code", 202), ("kind", "submit"))
    assert calls[submit_202] == 2
    assert calls[(("http.response.status_code", 429), ("kind", "submit"))] == 1
    assert calls[(("http.response.status_code", 204), ("kind", "submit"))] == 1
    assert calls[(("http.response.status_code", 200), ("kind", "status"))] == 2
    assert otel.counts("arm.throttled") == {(("kind", "submit"),): 1}
    (duration,) = otel.points("checkpoint.duration")  # the three that succeeded carry submittedAt
    assert duration.count == 3 and duration.attributes == {"outcome": "succeeded"}
    pacing = {p.attributes["kind"]: p.count for p in otel.points("arm.pacing.delay")}
    assert pacing["writes"] == 6 and pacing["reads"] >= 2  # every ARM call, waited or not


def test_in_flight_and_oldest_age_gauges(traced_app, otel, arm):
    arm.default = Scenario(done_after_polls=50, retry_after=600)
    traced_app.send({"resourceUri": new_resource_uri(), "checkpointId": "cp-g", "requestId": "r-gauge"})
    traced_app.deliver()
    (in_flight,) = otel.points("checkpoint.operations.in_flight")
    assert in_flight.value == 1
    (oldest,) = otel.points("checkpoint.operations.oldest_age")
    assert oldest.value == 0.0  # the poller has seen nothing yet
    traced_app.tracking_queue.clear_messages()  # the count is not read again within a minute
    (in_flight,) = otel.points("checkpoint.operations.in_flight")
    assert in_flight.value == 1


def test_oldest_age_follows_what_the_poller_sees(traced_app, otel, arm):
    # the first status read is throttled: the operation goes back to the tracking queue, unfinished
    arm.default = Scenario(poll_faults=[Fault.throttled(30)], done_after_polls=1)
    traced_app.send({"resourceUri": new_resource_uri(), "checkpointId": "cp-o", "requestId": "r-oldest"})
    traced_app.deliver()
    traced_app.poll()
    assert otel.counts("arm.throttled") == {(("kind", "status"),): 1}
    (oldest,) = otel.points("checkpoint.operations.oldest_age")
    assert 0.0 < oldest.value < 30.0


# ---------------------------------------------------------------- scripts/demo --trace


def test_the_demos_report_prints_one_requests_tree_and_the_metrics(traced_app, otel, arm):
    arm.default = Scenario(done_after_polls=1, final="200")
    request = {
        "resourceUri": new_resource_uri(),
        "checkpointId": "cp-d",
        "requestId": "r-demo",
        "traceparent": TRACEPARENT,
    }
    one_request(traced_app, request)
    out = io.StringIO()
    print_trace(otel.spans.get_finished_spans(), "r-demo", out)
    print_metrics(otel.reader.get_metrics_data(), out)
    lines = out.getvalue().splitlines()
    assert f"Trace {REQUEST_TRACE_ID:032x} of request r-demo (6 spans)" in lines
    assert "  child of the request's traceparent (span b7ad6b7169203331)" in lines
    shown = [line.split("ms  ", 1)[1] for line in lines if "ms  " in line]  # indent, name, facts
    tree = [" " * (len(span) - len(span.lstrip())) + span.strip().split("  ")[0] for span in shown]
    assert tree == [
        "checkpoint.submit",
        "  ARM POST deleteCheckpoint",
        "  checkpoint.poll",
        "    ARM GET status",
        "  checkpoint.poll",
        "    ARM GET status",
    ]
    assert any(line.split() == ["checkpoint.requests", "outcome=succeeded", "1"] for line in lines)
    print_trace([], "r-none", out)
    assert out.getvalue().endswith("No trace was recorded for r-none\n")


# ---------------------------------------------------------------- off without the connection string


@pytest.fixture
def distro_calls(monkeypatch):
    """configure_azure_monitor replaced: records each call, and raises so that a call cannot pass unseen."""
    calls = []

    def configure_azure_monitor(**options):
        calls.append(options)
        raise AssertionError("configure_azure_monitor was called")

    monkeypatch.setattr(azure.monitor.opentelemetry, "configure_azure_monitor", configure_azure_monitor)
    telemetry.reset_telemetry()
    yield calls
    telemetry.reset_telemetry()


def test_nothing_is_set_up_without_the_connection_string(make_app, arm, distro_calls, monkeypatch):
    monkeypatch.delenv(telemetry.CONNECTION_STRING_SETTING, raising=False)
    app = make_app()
    arm.default = Scenario(done_after_polls=1)
    install_services(None)
    services = get_services()  # the functions' own path: settings from the environment, telemetry decided once
    assert telemetry.current() is telemetry.OFF and not telemetry.current().enabled
    assert distro_calls == []
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider"
    assert isinstance(telemetry.OFF._tracer, trace.NoOpTracer)

    app.send({"resourceUri": new_resource_uri(), "checkpointId": "cp-off", "requestId": "r-off"})
    app.deliver()
    (peeked,) = app.tracking_queue.peek_messages()
    assert "traceContext" not in json.loads(peeked.content)
    assert types(app.run(["r-off"])["r-off"]) == ["Accepted", "Succeeded"]
    assert get_services() is services and distro_calls == []


def test_with_the_connection_string_the_distro_is_configured_once(distro_calls, monkeypatch):
    distro_calls.clear()
    env = {
        "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "ClientId=11111111-2222-3333-4444-555555555555;Authorization=AAD",
    }
    monkeypatch.setattr(azure.monitor.opentelemetry, "configure_azure_monitor", lambda **o: distro_calls.append(o))
    on = telemetry.configure_telemetry(env)
    assert on.enabled and telemetry.configure_telemetry(env) is on
    (options,) = distro_calls
    assert options["connection_string"] == env["APPLICATIONINSIGHTS_CONNECTION_STRING"]
    assert options["disable_logging"] is True  # the host sends the log lines already
    assert isinstance(options["credential"], ManagedIdentityCredential)
    assert options["instrumentation_options"]["requests"] == {"enabled": False}


def test_a_distro_that_fails_to_start_leaves_telemetry_off(distro_calls):
    env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"}
    assert telemetry.configure_telemetry(env) is telemetry.OFF
    assert len(distro_calls) == 1
