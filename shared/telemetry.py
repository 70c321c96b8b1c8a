"""OpenTelemetry traces and metrics of the app (docs/observability.md, "Traces and metrics").

Set up only when APPLICATIONINSIGHTS_CONNECTION_STRING is set, with the Azure Monitor distro;
without it, the API's no-op tracer and meter are used and nothing of the SDK is created. Every
step asks `current()` for the instruments; attributes are built only for a span that records
and metrics only when telemetry is on, so that telemetry off costs no more than no-op calls.

A deletion is one trace from submission to completion: its submit span is a child of the
request's `traceparent` when it carried one (else a new trace), and the tracking record keeps
the submit span's own context (`Operation.traceContext`, never put in events) so that every later
status read's span is its child.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from contextlib import contextmanager, nullcontext
from datetime import datetime
from urllib.parse import urlsplit

from opentelemetry import metrics, trace
from opentelemetry.trace import INVALID_SPAN, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .errors import ErrorCode
from .logs import get_logger

logger = get_logger(__name__)

CONNECTION_STRING_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
AUTHENTICATION_STRING_SETTING = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
SCOPE = "checkpoint-deletion"  # the instrumentation scope of every span and metric
ARM_SPANS = {"submit": "ARM POST deleteCheckpoint", "status": "ARM GET status", "instance": "ARM GET instance"}
REQUEST_ATTRIBUTES = ("requestId", "correlationId", "resourceUri", "checkpointId")  # on submit and poll spans
FAILED_OUTCOMES = {"failed", "retries-exhausted", "untrusted-operation-url", "error", "invalid"}
TERMINAL = {"Succeeded", "Failed"}
COUNT_EVERY_SECONDS = 60.0  # the tracking queue's approximate count is read at most this often
# An operation the poller has not seen for this long is no longer counted as in flight: every tracked
# operation is due at least every 10 minutes (tracking.MAX_DELAY_SECONDS), plus its lease and a tick.
SEEN_WINDOW_SECONDS = 900.0
# The distro's automatic instrumentations, off: ARM calls have explicit client spans (the requests
# and urllib3 ones would repeat them and trace token requests), and Azure SDK tracing would add a
# span for every storage call, every poll tick included. The web frameworks are not used.
DISABLED_INSTRUMENTATIONS = ("azure_sdk", "requests", "urllib", "urllib3", "django", "fastapi", "flask", "psycopg2")

_propagator = TraceContextTextMapPropagator()


class Telemetry:
    """The tracer and the instruments; `enabled` is False for the no-op set."""

    def __init__(self, tracer: trace.Tracer, meter: metrics.Meter, enabled: bool):
        self.enabled = enabled
        self._tracer = tracer
        # docs/observability.md, "Traces and metrics", says what each one counts
        self._requests = meter.create_counter("checkpoint.requests", "{request}")
        self._duration = meter.create_histogram("checkpoint.duration", "s")
        self._arm_calls = meter.create_counter("arm.calls", "{call}")
        self._throttled = meter.create_counter("arm.throttled", "{call}")
        self._pacing = meter.create_histogram("arm.pacing.delay", "s")
        meter.create_observable_gauge("checkpoint.operations.in_flight", [self._observe_in_flight], "{operation}")
        meter.create_observable_gauge("checkpoint.operations.oldest_age", [self._observe_oldest], "s")
        self._tracking = None
        self._count: tuple[float, int | None] | None = None  # (monotonic time read, count)
        self._seen: dict[str, tuple[float, float]] = {}  # requestId -> (submittedAt, monotonic time seen)
        self._lock = threading.Lock()

    def submit_span(self, facts: Mapping):
        """The span of one request message; `facts` are the request's (or an invalid one's fields)."""
        return self._submit_span(facts) if self.enabled else NO_SPAN

    def poll_span(self, operation):
        """The span of one status read of a tracked operation, in the operation's trace."""
        return self._poll_span(operation) if self.enabled else NO_SPAN

    def arm_span(self, call: str, method: str, url: str):
        """The client span of one ARM call: `call` is submit, status or instance."""
        return self._arm_span(call, method, url) if self.enabled else NO_SPAN

    @contextmanager
    def _submit_span(self, facts: Mapping):
        with self._tracer.start_as_current_span("checkpoint.submit", context=_parent(facts.get("traceparent"))) as span:
            if span.is_recording():
                _set_request(span, facts)
            yield span

    @contextmanager
    def _poll_span(self, operation):
        parent = _parent(operation.traceContext or operation.traceparent)
        with self._tracer.start_as_current_span("checkpoint.poll", context=parent) as span:
            if operation.traceContext is None and operation.traceparent is None:
                operation.traceContext = traceparent_of(span)  # an older record: later reads join this one
            with self._lock:
                self._seen[operation.requestId] = (operation.submittedAt, time.monotonic())
            if span.is_recording():
                _set_request(span, {name: getattr(operation, name) for name in REQUEST_ATTRIBUTES})
                span.set_attribute("pollCount", operation.pollCount)
            yield span

    def ended(self, span, outcome: str, operation=None) -> None:
        """How the step of `span` ended (an `Outcome`); a finished operation leaves the in-flight set."""
        if operation is not None and self.enabled and outcome in ("succeeded", "failed"):
            with self._lock:
                self._seen.pop(operation.requestId, None)
        if span.is_recording():
            span.set_attribute("outcome", str(outcome))
            if operation is not None:
                span.set_attribute("pollCount", operation.pollCount)
            if outcome in FAILED_OUTCOMES:
                span.set_status(StatusCode.ERROR)

    def trace_context(self) -> str | None:
        """The traceparent of the current span (the submit's), for the tracking record; None when off."""
        return traceparent_of(trace.get_current_span()) if self.enabled else None

    def event_written(self, event: dict) -> None:
        """An outcome event was written: counted when terminal, and noted on the current span."""
        if not self.enabled:
            return
        data = event["data"]
        code = (data.get("error") or {}).get("code")
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(event["type"], {"error.code": code} if code else {})
            span.set_attribute("status", data["status"])
            if code:
                span.set_attribute("error.code", code)
        if data["status"] not in TERMINAL:
            return
        outcome = data["status"].lower()
        self._requests.add(1, {"outcome": outcome, "error.code": code} if code else {"outcome": outcome})
        if data.get("submittedAt") and data.get("completedAt"):
            took = datetime.fromisoformat(data["completedAt"]) - datetime.fromisoformat(data["submittedAt"])
            self._duration.record(max(0.0, took.total_seconds()), {"outcome": outcome})

    @contextmanager
    def _arm_span(self, call: str, method: str, url: str):
        with self._tracer.start_as_current_span(ARM_SPANS[call], kind=SpanKind.CLIENT) as span:
            if span.is_recording():
                parts = urlsplit(url)
                span.set_attribute("arm.call", call)  # Application Insights names an HTTP dependency by its path
                span.set_attribute("http.request.method", method)
                span.set_attribute("server.address", parts.hostname or "")
                span.set_attribute("server.port", parts.port or 443)
                span.set_attribute("url.full", f"{parts.scheme}://{parts.netloc}{parts.path}")  # no query
            yield span

    def arm_paced(self, kind: str, waited: float) -> None:
        """The app's pacer held a `kind` (writes/reads) call for `waited` seconds (0 included)."""
        if self.enabled:
            self._pacing.record(waited, {"kind": kind})

    def arm_answered(self, span, call: str, response) -> None:
        """`response` is ARM's `requests.Response`, or the app's transient answer when none came."""
        if not self.enabled:
            return
        headers = getattr(response, "headers", None)
        if headers is None:  # no answer: a timeout, a dropped connection, no token, no time
            code = (response.error or {}).get("code")
            if code in (ErrorCode.TIMEOUT, ErrorCode.CONNECTION_ERROR):
                self._arm_calls.add(1, {"kind": call, "error.type": code})
            if span.is_recording():
                span.set_attribute("error.type", code or "unknown")
                span.set_status(StatusCode.ERROR)
            return
        status = response.status_code
        self._arm_calls.add(1, {"kind": call, "http.response.status_code": status})
        if status == 429:
            self._throttled.add(1, {"kind": call})
        if span.is_recording():
            span.set_attribute("http.response.status_code", status)
            span.set_attribute("x-ms-request-id", (headers.get("x-ms-request-id") or "")[:64])
            if status >= 400:
                span.set_attribute("error.type", str(status))
                span.set_status(StatusCode.ERROR)

    def watch(self, tracking) -> None:
        """The tracking store whose approximate count is the in-flight gauge."""
        self._tracking = tracking
        self._count = None

    def _observe_in_flight(self, options=None):
        tracking = self._tracking
        if tracking is None:
            return []
        now = time.monotonic()
        if self._count is None or now - self._count[0] >= COUNT_EVERY_SECONDS:
            try:
                count = tracking.approximate_count()
            except Exception as exc:  # storage failing: no point this time
                logger.warning("could not read the tracking queue's approximate count: %s", type(exc).__name__)
                count = None
            self._count = (now, count)
        count = self._count[1]
        return [] if count is None else [metrics.Observation(count)]

    def _observe_oldest(self, options=None):
        now = time.monotonic()
        with self._lock:
            for request_id, (_, seen) in list(self._seen.items()):
                if now - seen > SEEN_WINDOW_SECONDS:
                    del self._seen[request_id]  # finished elsewhere, or no longer polled
            oldest = min((submitted for submitted, _ in self._seen.values()), default=None)
        return [metrics.Observation(0.0 if oldest is None else max(0.0, time.time() - oldest))]


NO_SPAN = nullcontext(INVALID_SPAN)  # every span with telemetry off: no tracer call, the API's invalid span


def traceparent_of(span) -> str | None:
    """The W3C traceparent of `span`, or None when it has no valid context (a no-op span)."""
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _parent(traceparent: str | None):
    """The context to start a span in: the one `traceparent` names, else the current one."""
    return _propagator.extract({"traceparent": traceparent}) if isinstance(traceparent, str) else None


def _set_request(span, facts: Mapping) -> None:
    for name in REQUEST_ATTRIBUTES:
        value = facts.get(name)
        if isinstance(value, str):
            span.set_attribute(name, value)


OFF = Telemetry(trace.NoOpTracer(), metrics.NoOpMeter(SCOPE), enabled=False)
_lock = threading.Lock()
_current = OFF
_configured = False


def current() -> Telemetry:
    return _current


def configure_telemetry(
    env: Mapping[str, str] | None = None, *, tracer_provider=None, meter_provider=None
) -> Telemetry:
    """Set telemetry up once per process (later calls return what the first one decided).

    With APPLICATIONINSIGHTS_CONNECTION_STRING set, the Azure Monitor distro is configured (with
    the managed identity when APPLICATIONINSIGHTS_AUTHENTICATION_STRING says Authorization=AAD);
    without it, nothing is set up. `tracer_provider`/`meter_provider` (tests, the demo) replace
    whatever was set up, and no global provider is touched.
    """
    global _current, _configured
    with _lock:
        if tracer_provider is not None or meter_provider is not None:
            tracer = tracer_provider.get_tracer(SCOPE) if tracer_provider is not None else trace.NoOpTracer()
            meter = meter_provider.get_meter(SCOPE) if meter_provider is not None else metrics.NoOpMeter(SCOPE)
            _current, _configured = Telemetry(tracer, meter, enabled=True), True
            return _current
        if _configured:
            return _current
        _configured = True
        env = os.environ if env is None else env
        connection_string = (env.get(CONNECTION_STRING_SETTING) or "").strip()
        if not connection_string:
            return _current
        try:
            _configure_azure_monitor(connection_string, env.get(AUTHENTICATION_STRING_SETTING) or "")
        except Exception:  # telemetry must never stop the app
            logger.exception("Azure Monitor OpenTelemetry could not be set up: traces and metrics are off")
            return _current
        _current = Telemetry(trace.get_tracer(SCOPE), metrics.get_meter(SCOPE), enabled=True)
        logger.info("OpenTelemetry traces and metrics go to Application Insights")
        return _current


def reset_telemetry() -> None:
    """Back to no telemetry, and to be decided again by the next configure_telemetry (tests, the demo)."""
    global _current, _configured
    with _lock:
        _current, _configured = OFF, False


def _configure_azure_monitor(connection_string: str, authentication: str) -> None:
    from azure.monitor.opentelemetry import configure_azure_monitor  # heavy: imported only when used

    options: dict = {
        "connection_string": connection_string,
        # the Functions host already sends the app's log lines to Application Insights
        "disable_logging": True,
        # the host has its own live metrics and performance counters; the distro's would cost CPU
        "enable_live_metrics": False,
        "enable_performance_counters": False,
        "instrumentation_options": {name: {"enabled": False} for name in DISABLED_INSTRUMENTATIONS},
    }
    parts = dict(p.split("=", 1) for p in authentication.split(";") if "=" in p)
    if parts.get("Authorization", "").strip().upper() == "AAD":  # local auth off: ingest with Entra tokens
        from azure.identity import ManagedIdentityCredential

        options["credential"] = ManagedIdentityCredential(client_id=parts.get("ClientId", "").strip() or None)
    configure_azure_monitor(**options)
    # the worker's root logger is at INFO: the exporter's line per export would itself be shipped
    logging.getLogger("azure.monitor.opentelemetry").setLevel(logging.WARNING)
