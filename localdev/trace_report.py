"""`scripts/demo --trace`: the app's spans and metrics, taken with the OpenTelemetry SDK's in-memory
exporters (no Application Insights needed), printed as one request's trace, an indented tree with
durations, and a summary of every metric.

    with TraceCapture() as capture:
        ...                               # run the app
        data = capture.metrics()          # while the queues are still there (the in-flight gauge reads one)
    print_trace(capture.spans(), request_id)
    print_metrics(data)
"""

from __future__ import annotations

import sys

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.telemetry import configure_telemetry, reset_telemetry

# Attributes shown beside a span's name, in this order (the request's ids are shown once, in the title).
SHOWN = ("outcome", "status", "error.code", "pollCount", "http.response.status_code", "x-ms-request-id", "error.type")


class TraceCapture:
    """The app's telemetry into in-memory exporters, for the time of a `with` block."""

    def __init__(self):
        self._exporter = InMemorySpanExporter()
        self._tracer_provider = TracerProvider()
        self._tracer_provider.add_span_processor(SimpleSpanProcessor(self._exporter))
        self._reader = InMemoryMetricReader()
        self._meter_provider = MeterProvider(metric_readers=[self._reader])

    def __enter__(self) -> TraceCapture:
        configure_telemetry(tracer_provider=self._tracer_provider, meter_provider=self._meter_provider)
        return self

    def __exit__(self, *exc) -> None:
        reset_telemetry()
        self._tracer_provider.shutdown()
        self._meter_provider.shutdown()

    def spans(self) -> list[ReadableSpan]:
        return list(self._exporter.get_finished_spans())

    def metrics(self):
        """Every metric as of now (the gauges are read now)."""
        return self._reader.get_metrics_data()


def trace_of(spans: list[ReadableSpan], request_id: str) -> list[ReadableSpan]:
    """The spans of the trace whose submit span is the request's (empty when there is none)."""
    submits = [s for s in spans if s.name == "checkpoint.submit" and s.attributes.get("requestId") == request_id]
    if not submits:
        return []
    trace_id = submits[0].context.trace_id
    return sorted((s for s in spans if s.context.trace_id == trace_id), key=lambda s: s.start_time)


def print_trace(spans: list[ReadableSpan], request_id: str, out=sys.stdout) -> None:
    """The request's trace as a tree: start offset, duration, the span and what it found."""
    found = trace_of(spans, request_id)
    if not found:
        print(f"\nNo trace was recorded for {request_id}", file=out)
        return
    ids = {s.context.span_id for s in found}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in found:
        parent = span.parent.span_id if span.parent is not None and span.parent.span_id in ids else None
        children.setdefault(parent, []).append(span)
    first = found[0]
    start = first.start_time
    remote = first.parent if first.parent is not None and first.parent.is_remote else None
    print(f"\nTrace {first.context.trace_id:032x} of request {request_id} ({len(found)} spans)", file=out)
    print(f"  {first.attributes.get('resourceUri')}  checkpoint {first.attributes.get('checkpointId')}", file=out)
    if remote is not None:
        print(f"  child of the request's traceparent (span {remote.span_id:016x})", file=out)
    print(f"{'start':>9} {'duration':>10}  span", file=out)

    def show(span: ReadableSpan, depth: int) -> None:
        offset = (span.start_time - start) / 1e9
        took = (span.end_time - span.start_time) / 1e6
        facts = " ".join(f"{k}={span.attributes[k]}" for k in SHOWN if span.attributes.get(k) not in (None, ""))
        print(f"{offset:>8.3f}s {took:>8.1f}ms  {'  ' * depth}{span.name}  {facts}".rstrip(), file=out)
        for child in children.get(span.context.span_id, []):
            show(child, depth + 1)

    for root in children.get(None, []):
        show(root, 0)


def print_metrics(data, out=sys.stdout) -> None:
    """One line per metric and attribute set: a counter's total, a histogram's count, mean and
    max, a gauge's value."""
    rows = []
    for resource in data.resource_metrics if data is not None else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    labels = " ".join(f"{k}={v}" for k, v in sorted(point.attributes.items()))
                    name = f"{metric.name} ({metric.unit})" if metric.unit and metric.unit[0] != "{" else metric.name
                    if isinstance(point, HistogramDataPoint):
                        mean = point.sum / point.count if point.count else 0.0
                        value = f"count {point.count}  mean {mean:.3f}  max {point.max:.3f}"
                    else:
                        value = f"{point.value:g}" if isinstance(point.value, float) else str(point.value)
                    rows.append((name, labels, value))
    print("\nMetrics", file=out)
    if not rows:
        print("  (none recorded)", file=out)
    width = max((len(n) for n, _, _ in rows), default=0)
    label_width = max((len(labels) for _, labels, _ in rows), default=0)
    for name, labels, value in sorted(rows):
        print(f"  {name:<{width}}  {labels:<{label_width}}  {value}", file=out)
