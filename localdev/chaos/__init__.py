"""A chaos run of the app: many deletion requests through the local host, in a process of its own,
while everything around it fails, and a check that every request still ends in exactly one true
outcome.

    python -m localdev.chaos [--count N] [--seed S] [...]      (scripts/chaos runs it)

- ARM (the emulator) throttles per subscription as ARM does, runs one job per VM (a second POST
  on a busy VM answers 409) and injects random faults into POSTs, status reads and VM instance
  reads: 5xx, 429 bursts per subscription, answers slower than the app's ARM read timeout,
  connection resets and lost answers (processed, then the connection dropped). Each request names
  a checkpoint of a VM instance the emulator knows; 2% name one that is already gone, 5% meet an
  operation that fails for real, the others succeed after 1..3 s (Retry-After 1).
- The identity endpoint answers garbage for a while and later hangs; the Event Grid topic is down
  for a minute (hanging, refusing, answering 503); the host process is killed (SIGKILL) every 20 s
  and started again at once; Azurite, keeping its data on disk, is stopped and started again once.
- The run's wall time stays sane because the host gets a host.json with shorter queue timings
  (processingVisibilityTimeout 30 s, visibilityTimeout 5 s) and the poll timer runs every 2 s.

At the end (every request has its terminal event, or the time limit), it reads every event off the
events queue and prints a table: terminal events, duplicates (allowed), contradictory outcomes,
outcomes that differ from the emulator's truth (a Succeeded whose checkpoint still exists, a Failed
whose checkpoint is gone), lost requests, poison messages without an event, times from enqueue to
terminal event, the faults injected and the wall time. It writes the table as JSON too, and exits 1
on any violation (2 on bad usage).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="deletion requests (default 2000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the plan and of ARM's chaos (default 1)")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="seconds to wait for every outcome (default 600 + 0.3 per request)",
    )
    parser.add_argument(
        "--enqueue-over",
        type=float,
        default=60.0,
        help="seconds over which the requests are put on the queue (default 60; 0: at once)",
    )
    parser.add_argument(
        "--kill-every", type=float, default=20.0, help="seconds between host kills (default 20; 0: none)"
    )
    parser.add_argument(
        "--identity-hang", type=float, default=30.0, help="seconds the identity endpoint hangs (default 30)"
    )
    parser.add_argument(
        "--identity-garbage",
        type=float,
        default=10.0,
        help="seconds the identity endpoint answers garbage (default 10)",
    )
    parser.add_argument(
        "--eventgrid-down", type=float, default=60.0, help="seconds the Event Grid topic is down (default 60)"
    )
    parser.add_argument(
        "--azurite-down", type=float, default=5.0, help="seconds Azurite stays down when stopped (default 5)"
    )
    parser.add_argument(
        "--slow-seconds",
        type=float,
        default=None,
        help="delay of ARM's slow answers (default: the app's ARM read timeout + 2 s)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=150.0,
        help="seconds, after the last outcome, for the app to empty its queues (default 150)",
    )
    parser.add_argument(
        "--app-dir",
        type=Path,
        default=ROOT,
        help="the function app to run (function_app.py, shared/, host.json; default: this checkout)",
    )
    parser.add_argument(
        "--run-dir", type=Path, default=ROOT / ".localrun" / "chaos", help="where the run keeps its files"
    )
    parser.add_argument("--json", type=Path, default=ROOT / ".localrun" / "chaos.json", help="the report as JSON")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    args.app_dir = args.app_dir.resolve()
    if not (args.app_dir / "function_app.py").is_file():
        parser.error(f"--app-dir {args.app_dir} holds no function_app.py")
    if args.time_limit is None:
        args.time_limit = 600.0 + 0.3 * args.count
    return args


def main(argv: list[str] | None = None) -> int:
    from localdev.chaos.run import ChaosRun

    return ChaosRun(parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
