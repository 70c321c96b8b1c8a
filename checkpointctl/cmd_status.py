"""`checkpointctl status`: what waits in each of the app's queues, and the oldest visible operation's age."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime

from azure.core.exceptions import ResourceNotFoundError

from shared.tracking import Operation

from .connection import public_url
from .console import EXIT_OK, out
from .options import add_command, add_connection_options, open_queues, target
from .queueops import peek

EXAMPLES = """\
examples:
  python -m checkpointctl status
  python -m checkpointctl status --json --account-url https://myaccount.queue.core.windows.net

Counts are the service's approximate message counts (invisible messages included). The age of the
oldest operation in flight comes from the tracking messages a peek can see (at most 32, visible ones
only: operations waiting for their next poll are invisible), so it is the oldest visible one.
"""

LABELS = {
    "requests": "requests waiting",
    "tracking": "operations in flight",
    "events": "events waiting",
    "poison": "poison messages",
    "outbox": "events for Event Grid",
    "deadletter": "refused by Event Grid",
}


def add_parser(commands) -> None:
    status = add_command(
        commands,
        "status",
        help="count what waits in the app's queues",
        description="Requests waiting, operations in flight (and the oldest visible one's age), "
        "events waiting, poison messages, events waiting to be published to Event Grid.",
        epilog=EXAMPLES,
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")
    add_connection_options(status)
    status.set_defaults(run=run)


def queue_count(client) -> dict:
    """{"queue", "exists", "approximateMessageCount"} of one queue (a missing one counts 0)."""
    try:
        properties = client.get_queue_properties()
    except ResourceNotFoundError:
        return {"queue": client.queue_name, "exists": False, "approximateMessageCount": 0}
    return {"queue": client.queue_name, "exists": True, "approximateMessageCount": properties.approximate_message_count}


def _oldest_visible(client, now: float) -> dict | None:
    peeked = peek(client)
    if not peeked:
        return None
    submitted: list[float] = []
    unreadable = 0
    for message in peeked:
        try:
            value = Operation.from_message(message.content).submittedAt
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError("submittedAt is not a number")
            submitted.append(float(value))
        except (ValueError, TypeError, AttributeError):
            unreadable += 1
    result = {"peeked": len(peeked), "unreadable": unreadable}
    if submitted:
        oldest = min(submitted)
        result["submittedAt"] = datetime.fromtimestamp(oldest, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        result["ageSeconds"] = round(max(0.0, now - oldest), 1)
    return result


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def run(args: argparse.Namespace) -> int:
    where = target(args)
    queues = open_queues(args, where)
    clients = {
        "requests": queues.client(where.requests_queue),
        "tracking": queues.client(where.tracking_queue),
        "events": queues.client(where.events_queue),
        "poison": queues.client(where.poison_queue),
        "outbox": queues.client(where.outbox_queue),
        "deadletter": queues.client(where.deadletter_queue),
    }
    report: dict = {"queueService": public_url(clients["requests"]).rsplit("/", 1)[0]}
    for role, client in clients.items():
        report[role] = queue_count(client)
    report["tracking"]["oldestVisible"] = (
        _oldest_visible(clients["tracking"], time.time()) if report["tracking"]["exists"] else None
    )

    if args.json:
        out(json.dumps(report, ensure_ascii=False))
        return EXIT_OK

    out(f"queue service: {report['queueService']}")
    for role, label in LABELS.items():
        entry = report[role]
        where_text = entry["queue"] if entry["exists"] else f"{entry['queue']}, does not exist yet"
        out(f"{label + ':':<22}{entry['approximateMessageCount']:>6}  ({where_text})")
        if role == "tracking" and entry["exists"]:
            out(f"  {_oldest_text(entry['oldestVisible'])}")
    out("counts are approximate and include invisible messages")
    return EXIT_OK


def _oldest_text(oldest: dict | None) -> str:
    if oldest is None:
        return "oldest visible one: none visible (operations waiting for their next poll are invisible)"
    if "submittedAt" not in oldest:
        return f"oldest visible one: unknown ({oldest['peeked']} peeked, none readable as an operation)"
    text = (
        f"oldest visible one: submitted {oldest['submittedAt']}, {_duration(oldest['ageSeconds'])} ago "
        f"(of {oldest['peeked']} visible peeked; invisible ones, waiting for their next poll, are not counted)"
    )
    if oldest["unreadable"]:
        text += f"; {oldest['unreadable']} unreadable"
    return text
