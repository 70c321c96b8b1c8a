"""Side-by-side benchmark: the same deletions through an ideal client, azure-mgmt-scvmm (sync and
aio), the app in the local host, and the local host with a no-op app, against the ARM emulator.

    python -m localdev.bench [--count N] [--duration D] [--retry-after R] [--latency L]
                             [--subscriptions S] [--contenders a,b,...] [--one-subscription]
                             [--throttle] [--app-processes K] [--markdown] [--output PREFIX]
                             [--no-chart]

Writes PREFIX.json and PREFIX.png (default .localrun/bench, or .localrun/bench-throttled with
--throttle), and the contenders' logs in PREFIX-logs/; prints the table. docs/benchmark.md says
what each figure is and how it is measured. Operations in flight (the poller's memory and rate
with 10,000 waiting): python -m localdev.bench.inflight (see docs/benchmark.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
import uuid
from pathlib import Path

from localdev.bench import measure, plan, profile, report
from localdev.bench.plan import CONTENDERS, Workload

ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description=__doc__.split("\n\n")[0],
        epilog="Operations in flight (the poller's memory and status reads per second with N waiting): "
        ".venv/bin/python -m localdev.bench.inflight --operations 10000 --seconds 120 (--help for its options). "
        "docs/benchmark.md describes both.",
    )
    p.add_argument("--count", type=int, default=2000, help="deletions per contender, N (default 2000)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds each operation runs, D (default 3)")
    p.add_argument("--retry-after", type=int, default=1, help="Retry-After of every 202, R seconds (default 1)")
    p.add_argument("--latency", type=float, default=0.002, help="seconds added to every ARM answer, L (default 0.002)")
    p.add_argument(
        "--subscriptions", type=int, default=20, help="subscriptions the deletions spread over, S (default 20)"
    )
    p.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated, from {', '.join(CONTENDERS)} (default all)",
    )
    p.add_argument("--one-subscription", action="store_true", help="every deletion in one subscription")
    p.add_argument("--throttle", action="store_true", help="the emulator enforces ARM's buckets per subscription")
    p.add_argument(
        "--app-processes",
        type=int,
        default=1,
        metavar="K",
        help="run the app contender as K local hosts on the same queues, shown as app×K: the first runs the "
        "poll timer, the others submit only (default 1)",
    )
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown (for the README)")
    p.add_argument(
        "--output", type=Path, default=None, help="prefix of the JSON, PNG and logs (default .localrun/bench)"
    )
    p.add_argument("--no-chart", action="store_true", help="skip the PNG")
    p.add_argument(
        "--report-only", action="store_true", help="print the table (and chart) of PREFIX.json again, run nothing"
    )
    p.add_argument(
        "--profile", default="", help="comma-separated contenders to sample with py-spy (installed by hand into .venv)"
    )
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds one contender may take (default 1200)")
    p.add_argument("--sdk-threads", type=int, default=32, help="threads sending sdk-sync's POSTs (default 32)")
    p.add_argument(
        "--telemetry",
        action="store_true",
        help="the app contender records OpenTelemetry spans and metrics (batched into in-memory exporters, "
        "as the Azure Monitor distro batches them; nothing is sent anywhere)",
    )
    p.add_argument(
        "--app-log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"], help="hosted contenders' log level"
    )
    args = p.parse_args(argv)
    args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    args.profile = [c.strip() for c in args.profile.split(",") if c.strip()]
    unknown = [c for c in args.contenders if c not in CONTENDERS]
    if unknown or not args.contenders:
        p.error(f"--contenders: unknown {unknown}; choose from {', '.join(CONTENDERS)}")
    if args.app_processes < 1:
        p.error("--app-processes must be at least 1")
    if args.count < 1 or args.retry_after < 1 or args.duration < 0 or args.latency < 0 or args.subscriptions < 1:
        p.error("--count, --retry-after and --subscriptions must be at least 1; --duration and --latency at least 0")
    if args.output is None:
        args.output = ROOT / ".localrun" / ("bench-throttled" if args.throttle else "bench")
    return args


def run(args: argparse.Namespace) -> dict:
    from localdev.bench import runner

    workload = Workload(
        count=args.count,
        duration=args.duration,
        retry_after=args.retry_after,
        latency=args.latency,
        subscriptions=args.subscriptions,
        one_subscription=args.one_subscription,
        throttle=args.throttle,
    )
    logs = Path(f"{args.output}-logs")
    logs.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=logs / "bench.log", filemode="w", level=logging.INFO)
    logging.getLogger("azure").setLevel(logging.WARNING)
    options = {
        "timeout": args.timeout,
        "sdk_threads": args.sdk_threads,
        "app_log_level": args.app_log_level,
        "profile": args.profile,
        "app_processes": args.app_processes,
        "telemetry": args.telemetry,
    }
    results: dict[str, dict] = {}
    started = time.time()
    print(
        f"bench: starting Azurite, the identity endpoint and the ARM emulator; contenders: {', '.join(args.contenders)}"
    )
    with runner.StandIns(workload, logs) as stand:
        for name in args.contenders:
            tag = f"{name.split('-')[0][:4]}{uuid.uuid4().hex[:6]}"
            print(f"bench: {name} ...", flush=True)
            raw = runner.run_contender(name, stand, plan.items(workload, tag), logs, options)
            results[raw.contender] = r = measure.figures(raw, workload)
            print(
                f"bench: {raw.contender}: {r['succeeded']} ok, {r['failed']} failed in {r['wall_s']:.1f} s, "
                f"{r['cpu_ms_per_deletion']:.2f} ms CPU per deletion, {r['arm_calls']} ARM calls",
                flush=True,
            )
    measure.add_ratios(results)
    return {
        "workload": workload.to_dict(),
        "contenders": results,
        "derived": measure.derived(results, workload),
        "started": started,
        "app_processes": args.app_processes,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.system()},
    }


def show(document: dict, args: argparse.Namespace) -> None:
    results = document["contenders"]
    table = report.markdown_table(results) if args.markdown else report.text_table(results)
    print()
    print(table)
    print()
    for line in report.summary_lines(results, document["workload"], document["derived"]):
        print(line)
    for name, result in results.items():
        if result.get("profile"):
            print()
            print("\n".join(profile.lines(name, result["profile"])))


def _shown(path: Path) -> str:
    """`path` relative to the checkout when it is inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    json_path = Path(f"{args.output}.json")
    document = json.loads(json_path.read_text(encoding="utf-8")) if args.report_only else run(args)
    if not args.no_chart:
        try:
            from localdev.bench import chart

            png = chart.render(Path(f"{args.output}.png"), document["contenders"], document["workload"])
            document["chart"] = _shown(png)
        except ImportError as exc:
            print(f"bench: no chart ({exc}); scripts/bench installs matplotlib (requirements-bench.txt)")
    if not args.report_only:
        report.write_json(json_path, document)
    show(document, args)
    print(f"\nbench: {_shown(json_path)}" + (f", {document['chart']}" if document.get("chart") else ""))
    bad = [n for n, r in document["contenders"].items() if r["timed_out"] or r["child_exit_code"] != 0]
    if bad:
        print(f"bench: {', '.join(bad)} did not finish (timed out or its process failed): see the logs")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
