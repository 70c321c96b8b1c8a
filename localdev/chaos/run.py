"""The chaos run: stand-ins up, the app in its own process, requests in, faults on, events read,
and the report at the end (see the package's docstring)."""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import trustme

from localdev.arm_emulator import ArmEmulator, Chaos
from localdev.azurite import Azurite
from localdev.chaos import app_process
from localdev.chaos.app_process import AppProcess, short_host_json
from localdev.chaos.faults import FaultInjector, FaultTimes
from localdev.chaos.observe import EventCollector, Gate, approximate_count, create_queues, enqueue_all, queue, take_all
from localdev.chaos.plan import Plan, make_plan
from localdev.chaos.report import Report, Row, build_report
from localdev.eventgrid_endpoint import EventGridEndpoint
from localdev.identity_endpoint import IdentityEndpoint

ROOT = Path(__file__).resolve().parents[2]
REQUESTS, TRACKING, EVENTS = "checkpoint-delete-requests", "checkpoint-delete-tracking", "checkpoint-delete-events"
POLL_SCHEDULE = "*/2 * * * * *"
PROCESSING_VISIBILITY, VISIBILITY = 30, 5  # seconds; production: 10 minutes and 30 s


_READ_TIMEOUT = """
try:
    from shared.budgets import ARM_TIMEOUT as timeout
except ImportError:
    from shared.arm_client import DEFAULT_TIMEOUT as timeout
print(timeout[1] if isinstance(timeout, tuple) else timeout)
"""


def app_arm_read_timeout(app_dir: Path) -> float:
    """The app's read timeout for ARM calls (read in a process of its own, from the app's code),
    so that slow answers are slower than it; 60 s when it cannot be found."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _READ_TIMEOUT], cwd=app_dir, capture_output=True, text=True, timeout=60
        )
        return float(done.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return 60.0


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


class ChaosRun:
    def __init__(self, args: argparse.Namespace, out=sys.stdout) -> None:
        self.args = args
        self.out = out
        self.plan: Plan = make_plan(args.count, args.seed)
        self.times = FaultTimes(
            kill_every=args.kill_every,
            identity_garbage=args.identity_garbage,
            identity_hang=args.identity_hang,
            eventgrid_down=args.eventgrid_down,
            azurite_down=args.azurite_down,
        )
        self.run_dir: Path = args.run_dir
        self.chaos = Chaos(
            seed=args.seed,
            error_rate=0.10,
            throttle_rate=0.005,
            throttle_burst_seconds=5.0,
            slow_rate=0.01,
            slow_seconds=args.slow_seconds or app_arm_read_timeout(args.app_dir) + 2.0,
            reset_rate=0.02,
            lost_rate=0.02,
        )

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def run(self) -> int:
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.run_dir.mkdir(parents=True)
        logging.basicConfig(
            filename=self.run_dir / "standins.log",
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            force=True,
        )
        logging.getLogger("azure").setLevel(logging.WARNING)
        started = time.monotonic()
        for signum in (signal.SIGINT, signal.SIGTERM):  # stop cleanly, even when started in the background
            signal.signal(signum, _interrupt)
        try:
            with ExitStack() as stack:
                stack.callback(app_process.stop_all)
                report = self._run(stack, started)
        except KeyboardInterrupt:
            self.say("interrupted")
            return 130
        report.print(self.out)
        report.write(self.args.json)
        self.say(f"report written to {self.args.json}")
        return 0 if report.ok else 1

    def _run(self, stack: ExitStack, started: float) -> Report:
        a, plan = self.args, self.plan
        kinds = plan.kind_counts()
        self.say(
            f"Chaos run: {a.count} requests (seed {a.seed}) on {len(plan.instances)} VMs in "
            f"{len(plan.subscriptions)} subscriptions, {plan.vms_with_several_requests()} VMs with 2..3 requests; "
            f"{kinds['succeeds']} succeed, {kinds['fails']} fail for real, {kinds['gone']} name a checkpoint already gone"
        )
        self.say(
            f"Shortened for the run's wall time: host.json processingVisibilityTimeout {PROCESSING_VISIBILITY} s "
            f"and visibilityTimeout {VISIBILITY} s (production: 10 min, 30 s); POLL_SCHEDULE every 2 s. "
            f"ARM chaos: 10% 5xx, 429 bursts, resets, lost answers, answers {self.chaos.slow_seconds:g} s slow."
        )
        azurite = stack.enter_context(Azurite(persist_dir=self.run_dir / "azurite"))
        identity = stack.enter_context(IdentityEndpoint())
        ca = trustme.CA()
        arm = stack.enter_context(ArmEmulator(ca, identity, throttle=True))
        topic = stack.enter_context(EventGridEndpoint(ca, identity))
        arm.one_job_per_vm = True
        arm.chaos = self.chaos
        plan.apply(arm)

        conn = azurite.connection_string
        create_queues(conn, [REQUESTS, f"{REQUESTS}-poison", TRACKING, EVENTS, f"{EVENTS}-outbox"])
        settings = {
            "AzureWebJobsStorage": conn,
            "CHECKPOINT_REQUESTS_QUEUE": REQUESTS,
            "CHECKPOINT_TRACKING_QUEUE": TRACKING,
            "CHECKPOINT_EVENTS_QUEUE": EVENTS,
            "ARM_ENDPOINT": arm.endpoint,
            "REQUESTS_CA_BUNDLE": arm.ca_bundle_path,  # one CA for ARM and the topic
            "EVENTGRID_TOPIC_ENDPOINT": topic.endpoint,
            "POLL_SCHEDULE": POLL_SCHEDULE,
            **identity.env(),
        }
        host_json = short_host_json(a.app_dir, PROCESSING_VISIBILITY, VISIBILITY)
        app = AppProcess(a.app_dir, self.run_dir, settings, host_json)
        gate, enqueued, stop = Gate(), threading.Event(), threading.Event()
        stack.callback(stop.set)
        collector = EventCollector(queue(conn, EVENTS), gate).start()
        stack.callback(collector.stop)
        app.start()
        injector = FaultInjector(self.times, app, azurite, identity, topic, gate, enqueued).start()
        stack.callback(injector.stop)

        def feed() -> None:
            enqueue_all(queue(conn, REQUESTS), plan.requests, gate, stop, a.enqueue_over)
            enqueued.set()

        threading.Thread(target=feed, name="chaos-feed", daemon=True).start()
        self.say(
            f"Stand-ins up; the app in {a.app_dir} runs in host process {app.pid}, log {self.run_dir / 'host.log'}"
        )

        finished, self_exits = self._watch(app, injector, collector, started)
        injector.stop()
        settled = self._settle(conn, started)
        app.stop()
        collector.stop()
        collector.drain()
        poison_left = take_all(queue(conn, f"{REQUESTS}-poison"))
        log = injector.log
        statuses = Counter(r.status for r in arm.requests(kind="submit"))
        on_topic = {e["id"] for e in topic.events if str(e.get("id", "")).endswith((":succeeded", ":failed"))}
        wall = time.monotonic() - started
        extra = [
            Row("ARM contract violations (emulator)", len(arm.violations), True),
            Row("faults: ARM chaos", arm.chaos_counts),
            Row("faults: ARM 429 from its rate buckets", arm.throttled),
            Row("ARM answers to POSTs", dict(sorted((str(k), v) for k, v in statuses.items()))),
            Row("checkpoints deleted by ARM", len(arm.deletions)),
            Row("faults that could not be injected as planned", len(log.problems), True),
            Row("faults: host kills (SIGKILL)", log.host_kills),
            Row("host exits not caused by the run", self_exits),
            Row("faults: Azurite restarts (stopped, started again)", log.azurite_restarts),
            Row(
                "faults: identity garbage s / hang s",
                f"{log.identity_garbage_seconds:g} / {log.identity_hang_seconds:g}",
            ),
            Row("faults: identity requests met by a fault", identity.faults_served),
            Row("faults: Event Grid downtime s", log.eventgrid_down_seconds),
            Row("faults: Event Grid publishes met by a fault", topic.faults_served),
            Row("poison messages moved by the host", app.count_in_log("moved to queue")),
            Row("terminal events on the Event Grid topic (unique ids)", len(on_topic)),
            Row("all requests terminal before the time limit", finished),
            Row("queues drained after the run", settled),
            Row("wall time s", round(wall, 1)),
        ]
        info = {
            "app_dir": str(a.app_dir),
            "count": a.count,
            "seed": a.seed,
            "shortened": {
                "processingVisibilityTimeout": PROCESSING_VISIBILITY,
                "visibilityTimeout": VISIBILITY,
                "POLL_SCHEDULE": POLL_SCHEDULE,
            },
            "fault_timeline": log.timeline,
            "fault_problems": log.problems,
            "arm_violations": arm.violations[:50],
        }
        return build_report(
            plan.requests,
            collector.events,
            collector.unreadable,
            poison_left,
            arm.checkpoint_exists,
            extra,
            info,
        )

    def _watch(self, app: AppProcess, injector: FaultInjector, collector: EventCollector, started: float):
        """Wait for every request's terminal event (and every planned fault), or the time limit."""
        ids = {r.request_id for r in self.plan.requests}
        deadline = started + self.args.time_limit
        last_line = 0.0
        self_exits = 0
        while True:
            done = collector.terminal_count(ids)
            code = app.exited_by_itself()
            if code is not None:
                self_exits += 1
                self.say(f"host process exited by itself (code {code}); started again")
                app.restart()
            now = time.monotonic()
            if now - last_line >= 10 or done == len(ids):
                last_line = now
                enqueued = sum(1 for r in self.plan.requests if r.enqueued_at is not None)
                self.say(
                    f"{now - started:6.0f} s  terminal {done}/{len(ids)}  enqueued {enqueued}  "
                    f"host kills {injector.log.host_kills}  Azurite restarts {injector.log.azurite_restarts}"
                )
            if done == len(ids) and injector.one_offs_done.is_set():
                return True, self_exits
            if now > deadline:
                self.say(f"time limit of {self.args.time_limit:.0f} s reached")
                return False, self_exits
            time.sleep(1.0)

    def _settle(self, conn: str, started: float) -> bool:
        """Faults off: let the app empty its queues (late duplicates or contradictions show up)."""
        deadline = min(time.monotonic() + self.args.settle, started + self.args.time_limit + self.args.settle)
        names = [REQUESTS, f"{REQUESTS}-poison", TRACKING]
        while time.monotonic() < deadline:
            counts = [approximate_count(queue(conn, name)) for name in names]
            if all(c == 0 for c in counts):
                return True
            time.sleep(2.0)
        return False
