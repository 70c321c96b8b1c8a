"""Operations in flight: N operations waiting on the tracking queue, and one instance of the app's
real poller reading their status URLs for S seconds; its memory and its rate, and what bounds it.

    python -m localdev.bench.inflight [--operations N] [--seconds S] [--retry-after R]
                                      [--latency L] [--per-subscription P] [--output PATH]

The stand-ins are the benchmark's (:class:`.runner.StandIns`: Azurite with its data on disk, the
identity endpoint, the ARM emulator without throttling), the emulator scripted so that every
operation keeps running for the whole measurement, each 202 saying ``Retry-After: R``. A first
child process puts the N operations in flight through the app's ARM client and tracking store
(:mod:`.inflight_child` ``fill``), spread over subscriptions of P operations each (so that ARM's
read limit per subscription, which the app's pacer keeps to, is never what holds the poller
back); a second runs the app's :class:`~shared.poll.Poller`, built by
:func:`shared.runtime.build_services`, back to back for S seconds. Once a second this process
reads the poller's RSS (``VmRSS``), the CPU of the poller, of this process (the emulator and the
identity endpoint) and of Azurite (/proc), and counts the emulator's status GETs. It prints a row
a second, then the summary, and writes the JSON (default ``.localrun/inflight.json``).
docs/benchmark.md ("Operations in flight") says how to read it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import uuid
from pathlib import Path

from localdev.bench import hosting, plan, report
from localdev.bench.children import Child, child_env, machine_cpu, proc_cpu, proc_rss_mb, self_cpu
from localdev.bench.inflight_report import (
    PROCESSES,
    bounds,
    read_rates,
    row,
    rss_figures,
    storage_phases,
    summary_lines,
    utilisation,
)
from localdev.bench.measure import operation_of
from localdev.bench.plan import Workload

ROOT = Path(__file__).resolve().parents[2]
KEEP_RUNNING = 7 * 24 * 3600.0  # every operation runs this long: longer than any measurement
READS_PER_SUBSCRIPTION = 18.0  # per second at most, when every operation is read as soon as due
CHILD_MODULE = "localdev.bench.inflight_child"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m localdev.bench.inflight", description=__doc__.split("\n\n")[0])
    p.add_argument("--operations", type=int, default=10000, help="operations in flight, N (default 10000)")
    p.add_argument("--seconds", type=int, default=120, help="seconds the poller runs, S (default 120)")
    p.add_argument("--retry-after", type=int, default=5, help="Retry-After of every 202, R seconds (default 5)")
    p.add_argument("--latency", type=float, default=0.002, help="seconds added to every ARM answer (default 0.002)")
    p.add_argument(
        "--per-subscription",
        type=int,
        default=None,
        help=f"operations per subscription, P (default {READS_PER_SUBSCRIPTION:g} x R: that many reads/s when "
        "each is read as soon as due, below the 24.5/s the app's pacer allows)",
    )
    p.add_argument("--output", type=Path, default=ROOT / ".localrun" / "inflight.json", help="the JSON")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"], help="the app's log level")
    args = p.parse_args(argv)
    if args.operations < 1 or args.seconds < 1 or args.retry_after < 1 or args.latency < 0:
        p.error("--operations, --seconds and --retry-after must be at least 1, --latency at least 0")
    args.per_subscription = args.per_subscription or max(1, int(READS_PER_SUBSCRIPTION * args.retry_after))
    return args


def _sample(t0: float, stand, child: Child) -> dict:
    machine = machine_cpu() or (0.0, 0.0)
    tick = child.latest
    return {
        "t": round(time.time() - t0, 3),
        "rss_mb": proc_rss_mb(child.proc.pid),
        "app_cpu_s": proc_cpu(child.proc.pid),
        "emulator_cpu_s": self_cpu(),
        "azurite_cpu_s": proc_cpu(stand.azurite.pid),
        "machine_busy_s": machine[0],
        "machine_total_s": machine[1],
        "reads": len(stand.arm.requests(kind="status")),
        "storage_calls": {k: v for k, v in tick.get("calls", {}).items() if k != "received"},
        "storage_seconds": tick.get("seconds", {}),
    }


def _spent(samples: list[dict], key: str) -> float | None:
    a, b = samples[0].get(key), samples[-1].get(key)
    return None if a is None or b is None else b - a


def run(args: argparse.Namespace) -> dict:
    from localdev.bench.runner import StandIns

    n, seconds, r = args.operations, args.seconds, args.retry_after
    workload = Workload(
        count=n,
        duration=KEEP_RUNNING,
        retry_after=r,
        latency=args.latency,
        subscriptions=math.ceil(n / args.per_subscription),
    )
    logs = args.output.with_name(args.output.stem + "-logs")
    logs.mkdir(parents=True, exist_ok=True)
    tag = f"inflight-{uuid.uuid4().hex[:8]}"
    queues = {
        "CHECKPOINT_REQUESTS_QUEUE": f"{tag}-requests",
        "CHECKPOINT_TRACKING_QUEUE": f"{tag}-tracking",
        "CHECKPOINT_EVENTS_QUEUE": f"{tag}-events",
    }
    items_path = logs / "items.json"
    plan.write_items(items_path, plan.items(workload, tag[-6:]))
    print(
        f"inflight: starting Azurite, the identity endpoint and the ARM emulator; {n} operations over "
        f"{workload.subscription_count} subscriptions, Retry-After {r} s, the poller for {seconds} s"
    )
    with StandIns(workload, logs) as stand:
        env = child_env(stand.identity.env(), hosting.app_settings(stand, queues))
        config = {"items": str(items_path), "log_level": args.log_level}
        fill = Child({**config, "log_file": str(logs / "fill.log")}, env, logs, "fill", CHILD_MODULE, ("fill",))
        filled = fill.expect("filled", max(300.0, n * 0.2))
        fill.wait()
        if filled is None or filled["outcomes"].get("accepted", 0) != n:
            raise RuntimeError(f"inflight: the operations were not all put in flight: {filled} (see {logs})")
        print(f"inflight: {n} operations in flight (POSTed, tracking messages added) in {filled['seconds']:.1f} s")

        poll = Child({**config, "log_file": str(logs / "poll.log")}, env, logs, "poll", CHILD_MODULE, ("poll",))
        try:
            if poll.expect("ready", 120.0) is None:
                raise RuntimeError("inflight: the poller's process did not get ready within 120 s")
            t0 = time.time()
            poll.send("go")
            samples = [_sample(t0, stand, poll)]
            print(row(None, samples[0]))
            for k in range(1, seconds + 1):
                time.sleep(max(0.0, t0 + k - time.time()))
                samples.append(_sample(t0, stand, poll))
                print(row(samples[-2], samples[-1]), flush=True)
            poll.send("stop")
            done = poll.expect("done", 60.0) or {}
        except BaseException:
            poll.kill()
            poll.wait()
            raise
        rusage = poll.wait(timeout=30.0)
        reads = [(rec.time - t0, operation_of(rec) or "-") for rec in stand.arm.requests(kind="status")]
    rates = read_rates(reads, n, seconds)
    cycling = rates["cycling_from_s"] or 0.0
    util = utilisation(samples, cycling)
    rates.update(storage_phases(samples, rates["per_second"], math.ceil(cycling)))
    rates["reads_total"] = sum(rates["per_second"])
    return {
        "workload": {
            "operations": n,
            "seconds": seconds,
            "retry_after": r,
            "latency": args.latency,
            "per_subscription": args.per_subscription,
            "subscriptions": workload.subscription_count,
            "reads_due_per_s": n / r,
        },
        "fill": filled,
        "rates": rates,
        "rss": rss_figures(samples),
        "cpu_window_s": {
            "app": done.get("cpu_user", math.nan) + done.get("cpu_system", math.nan),
            **{name: _spent(samples, f"{name}_cpu_s") for name in PROCESSES[1:]},
            "machine_busy": _spent(samples, "machine_busy_s"),
        },
        "utilisation_cycling": util,
        "bounds": bounds(util),
        "poller": {k: done.get(k) for k in ("runs", "outcomes", "calls", "seconds")},
        "poller_peak_rss_mb": rusage["max_rss_kb"] / 1024,
        "poller_exit_code": rusage["exit_code"],
        "samples": samples,
        "machine": {"cpus": os.cpu_count()},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    document = run(args)
    print()
    print("\n".join(summary_lines(document)))
    report.write_json(args.output, document)
    try:
        shown = args.output.resolve().relative_to(ROOT)
    except ValueError:
        shown = args.output
    print(f"\ninflight: {shown}")
    return 0 if document["poller_exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
