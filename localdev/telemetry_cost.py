"""The CPU that the app's telemetry calls add to a deletion (shared/telemetry.py), measured alone.

One cycle makes the instrumentation calls of one deletion as the app makes them: the submit
(its span, the POST's client span, pacing, the answer, the Accepted event, the trace context
kept for the tracking record) and three status reads (each a span, a GET client span, pacing,
the answer; the Succeeded event on the last). It is run with telemetry off (the API's no-op
tracer and meter: what the app does without APPLICATIONINSIGHTS_CONNECTION_STRING), with the SDK
recording (spans and metrics kept in memory, no exporter: a lower bound of telemetry on), and
bare (the same loop without the calls), and prints the CPU per cycle of each.

    python -m localdev.telemetry_cost [--cycles 1000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import time

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from shared import telemetry
from shared.tracking import Operation

URI = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/vm"
POST_URL = (
    f"https://management.azure.com{URI}/providers/Microsoft.ScVmm/virtualMachineInstances/default/deleteCheckpoint"
)
STATUS_URL = (
    "https://management.azure.com/providers/Microsoft.ScVmm/locations/x/operationResults/1?api-version=2024-06-01"
)
POLLS = 3
FACTS = {"requestId": "r-1", "correlationId": "c-1", "resourceUri": URI, "checkpointId": "cp-1", "traceparent": None}
ACCEPTED = {"type": "ScVmm.CheckpointDelete.Accepted", "data": {"status": "Accepted", "requestId": "r-1"}}
SUCCEEDED = {
    "type": "ScVmm.CheckpointDelete.Succeeded",
    "data": {
        "status": "Succeeded",
        "submittedAt": "2026-01-01T00:00:00.000Z",
        "completedAt": "2026-01-01T00:00:42.000Z",
    },
}


class Answer:
    """What the app hands telemetry for an ARM answer: its status and headers."""

    def __init__(self, status_code: int):
        self.status_code = status_code
        self.headers = {"x-ms-request-id": "9e6dbb64-0b7d-4387-bbc1-1f7015f99d63"}


def instrumented(tel: telemetry.Telemetry, operation: Operation, accepted: Answer, running: Answer, done: Answer):
    with tel.submit_span(FACTS) as span:
        with tel.arm_span("submit", "POST", POST_URL) as call:
            tel.arm_paced("writes", 0.0)
            tel.arm_answered(call, "submit", accepted)
        operation.traceContext = tel.trace_context()
        tel.event_written(ACCEPTED)
        tel.ended(span, "accepted")
    for poll in range(1, POLLS + 1):
        with tel.poll_span(operation) as span:
            with tel.arm_span("status", "GET", STATUS_URL) as call:
                tel.arm_paced("reads", 0.0)
                tel.arm_answered(call, "status", done if poll == POLLS else running)
            if poll == POLLS:
                tel.event_written(SUCCEEDED)
            tel.ended(span, "succeeded" if poll == POLLS else "running", operation)


def bare(tel, operation: Operation, accepted: Answer, running: Answer, done: Answer):
    """The same cycle without the telemetry calls: the loop's own cost."""
    for _ in range(1, POLLS + 1):
        pass


def cpu_per_cycle(cycle, tel, cycles: int, repeat: int) -> float:
    """The least CPU seconds per cycle over `repeat` runs of `cycles` cycles (one fresh record each)."""
    answers = (Answer(202), Answer(202), Answer(200))
    best = float("inf")
    for _ in range(repeat):
        operations = [Operation(f"r-{i}", URI, STATUS_URL, STATUS_URL, False, time.time()) for i in range(cycles)]
        started = time.process_time()
        for operation in operations:
            cycle(tel, operation, *answers)
        best = min(best, (time.process_time() - started) / cycles)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localdev.telemetry_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=1000, help="submit+poll cycles per run (default 1000)")
    parser.add_argument("--repeat", type=int, default=7, help="runs; the least CPU counts (default 7)")
    args = parser.parse_args(argv)

    telemetry.reset_telemetry()
    off = telemetry.configure_telemetry({})  # no connection string: the no-op set
    assert not off.enabled
    figures = {
        "bare (no telemetry calls)": cpu_per_cycle(bare, off, args.cycles, args.repeat),
        "telemetry off (no-op API)": cpu_per_cycle(instrumented, off, args.cycles, args.repeat),
    }
    tracer_provider, meter_provider = TracerProvider(), MeterProvider(metric_readers=[InMemoryMetricReader()])
    on = telemetry.configure_telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    figures["SDK recording, not exported"] = cpu_per_cycle(instrumented, on, args.cycles, args.repeat)
    telemetry.reset_telemetry()
    tracer_provider.shutdown()
    meter_provider.shutdown()

    base = figures["bare (no telemetry calls)"]
    print(f"CPU per deletion (1 submit + {POLLS} status reads), least of {args.repeat} runs of {args.cycles}:")
    for name, seconds in figures.items():
        added = "" if seconds is base else f"  (+{(seconds - base) * 1e6:.1f} µs over bare)"
        print(f"  {name:<30} {seconds * 1e6:8.1f} µs{added}")
    added_off = (figures["telemetry off (no-op API)"] - base) * args.cycles
    print(f"telemetry off adds {added_off * 1000:.1f} ms of CPU to {args.cycles} deletions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
