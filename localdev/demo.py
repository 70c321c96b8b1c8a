"""Run the app's main job on the local stand-ins and watch it work.

Starts Azurite, the managed-identity endpoint and the ARM emulator (HTTPS, a local CA), runs
the functions of function_app.py in the local host, enqueues a mixed batch of deletion
requests (both of the spec's example shapes, operations that take several polls, one that
ARM rejects, one malformed), shows live progress, prints each request's outcome and exits 0
when every request reached the outcome it was scripted for.

    python -m localdev.demo [--count N] [--timeout SECONDS] [--one-subscription] [--trace]

With --trace, the app's OpenTelemetry spans and metrics go to in-memory exporters, and the
first request's trace (an indented tree with durations) and a metrics summary are printed.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import trustme

from localdev.arm_emulator import ArmEmulator, Fault, Scenario
from localdev.azurite import Azurite
from localdev.functions_host import LocalHost
from localdev.identity_endpoint import IdentityEndpoint
from localdev.trace_report import TraceCapture, print_metrics, print_trace

ROOT = Path(__file__).resolve().parent.parent
LOG_FILE = ROOT / ".localrun" / "demo.log"
TERMINAL = {"Succeeded", "Failed"}


@dataclass(frozen=True)
class Kind:
    """One kind of demo request: how ARM is scripted to answer it and what its outcome must be."""

    name: str
    scenario: Scenario | None  # None: the request never reaches ARM
    outcome: str  # "Succeeded" or "Failed"
    error_code: str | None = None
    checkpoint: bool = True  # MaximumSet shape ({"id": ...}) or MinimumSet ({})
    malformed: bool = False


KINDS = [
    Kind("maximum-set", Scenario(retry_after=1, done_after_polls=2, final="200"), "Succeeded"),
    Kind("minimum-set", Scenario(retry_after=1, done_after_polls=3, final="204"), "Succeeded", checkpoint=False),
    Kind("async-operation", Scenario(submit="accepted_async", retry_after=1, done_after_polls=2), "Succeeded"),
    Kind(
        "throttled-once", Scenario(submit_faults=[Fault.throttled(1)], retry_after=1, done_after_polls=1), "Succeeded"
    ),
    Kind(
        "arm-rejects",
        Scenario(submit=Fault.arm_error(400, "InvalidParameter", "the checkpoint cannot be deleted")),
        "Failed",
        "InvalidParameter",
    ),
    Kind("malformed", None, "Failed", "InvalidRequest", malformed=True),
]


@dataclass
class DemoRequest:
    request_id: str
    kind: Kind
    resource_uri: str
    status: str = "Waiting"
    error_code: str | None = None
    poll_count: int | None = None

    @property
    def as_scripted(self) -> bool:
        return self.status == self.kind.outcome and self.error_code == self.kind.error_code


def plan(count: int, one_subscription: bool = False) -> list[DemoRequest]:
    """`count` requests cycling through the kinds (every kind at least once when count >= 6)."""
    requests = []
    shared_subscription = uuid.uuid4()
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        subscription = shared_subscription if one_subscription else uuid.uuid4()
        resource_uri = f"/subscriptions/{subscription}/resourceGroups/demo-rg/providers/Microsoft.HybridCompute/machines/vm-{i:04d}"
        requests.append(DemoRequest(f"demo-{i:04d}-{kind.name}", kind, resource_uri))
    return requests


def message_for(request: DemoRequest, index: int) -> str:
    """The queue message text; alternates plain and base64 as producers do."""
    if request.kind.malformed:
        body = {"resourceUri": request.resource_uri + "/../escape", "requestId": request.request_id}
    else:
        body = {"resourceUri": request.resource_uri, "requestId": request.request_id, "correlationId": "demo"}
        if request.kind.checkpoint:
            body["checkpointId"] = f"checkpoint-{index:04d}"
    text = json.dumps(body)
    return base64.b64encode(text.encode()).decode() if index % 2 else text


class Progress:
    """One status line: redrawn in place on a terminal, printed every few seconds elsewhere."""

    def __init__(self, total: int, stream=sys.stdout):
        self.total = total
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self._last_print = 0.0

    def show(self, counts: Counter, final: bool = False) -> None:
        now = time.monotonic()
        if not (self.tty or final or now - self._last_print >= 2.0):
            return
        self._last_print = now
        done = counts["Succeeded"] + counts["Failed"]
        width = 30
        filled = int(width * done / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        elapsed = now - self.started
        line = (
            f"[{bar}] {done}/{self.total} done | waiting {counts['Waiting']} | accepted {counts['Accepted']} | "
            f"succeeded {counts['Succeeded']} | failed {counts['Failed']} | {elapsed:5.1f} s"
        )
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def run(count: int, timeout: float, one_subscription: bool = False, trace: bool = False) -> int:
    LOG_FILE.parent.mkdir(exist_ok=True)
    logging.basicConfig(
        filename=LOG_FILE, filemode="w", level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("azure").setLevel(logging.WARNING)
    requests = plan(count, one_subscription)
    by_id = {r.request_id: r for r in requests}
    print(f"Starting Azurite, the identity endpoint and the ARM emulator (log: {LOG_FILE.relative_to(ROOT)})")

    with ExitStack() as running:
        azurite = running.enter_context(Azurite())
        identity = running.enter_context(IdentityEndpoint())
        arm = running.enter_context(
            ArmEmulator(
                trustme.CA(),
                identity,
                throttle=one_subscription,  # ARM's buckets per subscription and principal
            )
        )
        os.environ.update(
            {
                "AzureWebJobsStorage": azurite.connection_string,
                "CHECKPOINT_REQUESTS_QUEUE": "checkpoint-delete-requests",
                "CHECKPOINT_TRACKING_QUEUE": "checkpoint-delete-tracking",
                "CHECKPOINT_EVENTS_QUEUE": "checkpoint-delete-events",
                "ARM_ENDPOINT": arm.endpoint,
                "POLL_SCHEDULE": "*/2 * * * * *",
                "REQUESTS_CA_BUNDLE": arm.ca_bundle_path,
                **identity.env(),
            }
        )
        for request in requests:
            if request.kind.scenario is not None:
                arm.script(request.resource_uri, request.kind.scenario)
        capture = running.enter_context(TraceCapture()) if trace else None
        metrics = None

        import function_app  # after the settings are in place, as the worker imports it
        from shared.queues import open_queue
        from shared.runtime import install_services
        from shared.settings import Settings

        settings = Settings.from_env()
        requests_queue = open_queue(settings.storage, settings.requests_queue)
        events_queue = open_queue(settings.storage, settings.events_queue)
        host = LocalHost(function_app.app, os.environ, ROOT / "host.json")
        print(f"Local host running {', '.join(sorted([*host.queue_functions, *host.timer_functions]))}")
        host.start()
        try:
            started = time.monotonic()
            for index, request in enumerate(requests):
                requests_queue.send_message(message_for(request, index))
            print(f"Enqueued {count} deletion requests in {time.monotonic() - started:.1f} s")
            finished = watch(events_queue, by_id, Progress(count), started + timeout)
            elapsed = time.monotonic() - started
            if capture is not None:
                metrics = capture.metrics()  # while the tracking queue is there: the in-flight gauge reads it
        finally:
            host.stop()
            install_services(None)
        arm_calls = len(arm.received)
        tokens = identity.tokens_issued
        throttled = arm.throttled
        violations = list(arm.violations)

    report(requests)
    if capture is not None:
        print_trace(capture.spans(), requests[0].request_id)
        print_metrics(metrics)
    accepted = sum(1 for r in requests if r.kind.scenario is not None)
    print(
        f"\n{count} requests in {elapsed:.1f} s ({count / elapsed:.1f} requests/s); "
        f"{arm_calls} ARM calls ({arm_calls / max(accepted, 1):.1f} per request that reached ARM); "
        f"{tokens} token request(s); {len(violations)} spec violation(s)"
        + (f"; one subscription: ARM answered 429 {throttled} time(s)" if one_subscription else "")
    )
    wrong = [r for r in requests if not r.as_scripted]
    if not finished:
        print(f"Timed out after {timeout:.0f} s with {sum(r.status not in TERMINAL for r in requests)} unfinished")
    if wrong or violations or not finished:
        print(f"FAILED: {len(wrong)} request(s) did not reach their scripted outcome")
        return 1
    print("OK: every request reached its scripted outcome")
    return 0


def watch(events_queue, by_id: dict[str, DemoRequest], progress: Progress, deadline: float) -> bool:
    """Follow the events queue until every request has its terminal event or the deadline passes."""
    while True:
        for message in events_queue.receive_messages(messages_per_page=32, max_messages=256):
            event = json.loads(message.content)
            events_queue.delete_message(message)
            request = by_id.get(event["data"].get("requestId"))
            if request is None or request.status in TERMINAL:
                continue
            request.status = event["data"]["status"]
            request.error_code = (event["data"].get("error") or {}).get("code")
            request.poll_count = event["data"].get("pollCount")
        counts = Counter(r.status for r in by_id.values())
        done = counts["Succeeded"] + counts["Failed"] == len(by_id)
        progress.show(counts, final=done)
        if done:
            return True
        if time.monotonic() > deadline:
            progress.show(counts, final=True)
            return False
        time.sleep(0.5)


def report(requests: list[DemoRequest]) -> None:
    print(f"\n{'request':32} {'kind':18} {'outcome':10} {'error':16} {'polls':>5}  as scripted")
    shown = requests if len(requests) <= 24 else [*requests[:12], *[r for r in requests[12:] if not r.as_scripted]]
    for r in shown:
        polls = "" if r.poll_count is None else str(r.poll_count)
        mark = "yes" if r.as_scripted else f"NO (expected {r.kind.outcome} {r.kind.error_code or ''})"
        print(f"{r.request_id:32} {r.kind.name:18} {r.status:10} {r.error_code or '':16} {polls:>5}  {mark}")
    if len(shown) < len(requests):
        print(f"... {len(requests) - len(shown)} more, all as scripted")
    by_kind = Counter((r.kind.name, r.status, r.error_code or "") for r in requests)
    print("\nper kind: " + "; ".join(f"{k} -> {s} {c}".strip() + f" x{n}" for (k, s, c), n in sorted(by_kind.items())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=12, help="number of deletion requests (default 12)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for every outcome (default 300)")
    parser.add_argument(
        "--one-subscription",
        action="store_true",
        help="every request in one subscription, and the ARM emulator throttling as ARM does "
        "(writes 200 + 10/s, reads 250 + 25/s): shows the app pacing itself",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="capture the app's OpenTelemetry spans and metrics in memory; print the first request's "
        "trace as a tree with durations, and a metrics summary",
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    return run(args.count, args.timeout, args.one_subscription, args.trace)


if __name__ == "__main__":
    sys.exit(main())
