"""`checkpointctl watch`: follow the events queue and print each outcome event (a deletion's, or a retention
policy's closing one)."""

from __future__ import annotations

import argparse
import json
import time

from azure.core.exceptions import ResourceNotFoundError

from shared.policy import COMPLETED

from .connection import UsageError
from .console import EXIT_FAILED, EXIT_OK, note, out
from .events import Event, human_line, json_line, parse_event, printable
from .options import add_command, add_connection_options, open_queues, positive_float, read_source, target
from .queueops import PEEK_LIMIT, delete_quietly, release

RECEIVE_VISIBILITY_SECONDS = 30  # a received event stays hidden this long while it is printed and deleted

EXAMPLES = """\
examples:
  # follow the events until Ctrl-C (consumes them: received, printed, deleted)
  python -m checkpointctl watch

  # wait for the requests just sent; exit 0 if all succeeded, 1 if one failed or 30 min passed
  python -m checkpointctl watch --until-done-file sent.txt --timeout 1800

  # look without consuming, as JSON lines
  python -m checkpointctl watch --peek --json --until-done 3f2c... --timeout 60

  # wait for a retention policy: done at its ScVmm.CheckpointPolicy.Completed or .Failed event
  python -m checkpointctl watch --until-done policy-7 --timeout 3600

By default watch is a consumer: each event is received, printed, then deleted, so nothing else reading
the events queue sees it. --peek deletes nothing, but a peek sees at most the first 32 visible messages
of the queue: when more events are waiting, later ones show only once earlier ones are consumed.
A policy request is done at its Completed or Failed event; its deletions (requestId <policy id>/<checkpoint>)
are printed on the way but do not end the wait.
Exit codes: 0 every awaited request ended well: a deletion Succeeded, a policy Completed with no failed
deletion (or nothing awaited); 1 one Failed, a policy Completed with failed deletions, or --timeout came
first; 2 bad usage. A repeated event id (delivery is at least once) is printed once.
"""


def add_parser(commands) -> None:
    watch = add_command(
        commands,
        "watch",
        help="follow the outcome events",
        description="Follow the events queue and print each outcome event.",
        epilog=EXAMPLES,
    )
    watch.add_argument("--peek", action="store_true", help="only peek (at most 32 visible messages); delete nothing")
    watch.add_argument("--json", action="store_true", help="print each event's JSON on one line")
    watch.add_argument(
        "--until-done",
        nargs="+",
        metavar="ID",
        default=[],
        help="stop once each requestId had Succeeded or Failed (a policy's: Completed or Failed)",
    )
    watch.add_argument(
        "--until-done-file",
        metavar="F",
        help="requestIds to wait for, from enqueue's output (plain or --json); - reads stdin",
    )
    watch.add_argument("--timeout", type=positive_float, metavar="S", help="stop after S seconds")
    watch.add_argument(
        "--interval",
        type=positive_float,
        default=2.0,
        metavar="S",
        help="seconds between looks at an empty queue (default 2)",
    )
    add_connection_options(watch)
    watch.set_defaults(run=run)


def _awaited_ids(args: argparse.Namespace) -> list[str]:
    ids = list(args.until_done)
    if args.until_done_file is not None:
        for number, line in enumerate(read_source(args.until_done_file, "--until-done-file"), start=1):
            if isinstance(line, bytes):
                line = line.decode("utf-8-sig", errors="replace")
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("{"):
                try:
                    request_id = json.loads(line).get("requestId")
                except (ValueError, AttributeError):
                    request_id = None
                if not isinstance(request_id, str) or not request_id:
                    raise UsageError(f"--until-done-file line {number}: a JSON line must carry a requestId")
                ids.append(request_id)
            else:
                ids.append(line)
        if not ids:
            raise UsageError(f"--until-done-file {args.until_done_file}: no requestIds in it")
    return list(dict.fromkeys(ids))


def run(args: argparse.Namespace) -> int:
    awaited = _awaited_ids(args)
    where = target(args)
    client = open_queues(args, where).client(where.events_queue)
    outcome: dict[str, Event] = {}  # awaited requestId -> its closing event (the first one wins)
    printed_events: set[str] = set()
    peeked_messages: set[str] = set()
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    missing_noted = False

    def show(event: Event) -> None:
        if event.event_id is not None:
            if event.event_id in printed_events:
                return
            printed_events.add(event.event_id)
        out(json_line(event) if args.json else human_line(event))
        # A deletion's Succeeded/Failed, or a policy's Completed/Failed. A policy's own deletions (requestId
        # `<policy id>/<checkpointID>`) are shown above but end nothing: their requestIds are not awaited.
        closing = event.terminal or event.policy_terminal
        if closing and event.request_id in awaited_set and event.request_id not in outcome:
            outcome[event.request_id] = event

    awaited_set = set(awaited)

    def done() -> bool:
        return bool(awaited) and len(outcome) == len(awaited)

    try:
        while not done():
            try:
                if args.peek:
                    batch = [m for m in client.peek_messages(max_messages=PEEK_LIMIT) if m.id not in peeked_messages]
                    for message in batch:
                        peeked_messages.add(message.id)
                        show(parse_event(message.id, message.content))
                        if done():
                            break
                else:
                    batch = list(
                        client.receive_messages(
                            messages_per_page=PEEK_LIMIT,
                            max_messages=PEEK_LIMIT,
                            visibility_timeout=RECEIVE_VISIBILITY_SECONDS,
                        )
                    )
                    for index, message in enumerate(batch):
                        show(parse_event(message.id, message.content))
                        # Not deleted: someone else did, or our receipt expired; it was printed anyway.
                        delete_quietly(client, message)
                        if done():
                            release(client, batch[index + 1 :])
                            break
            except ResourceNotFoundError:
                batch = []
                if not missing_noted:
                    note(f"queue {where.events_queue} does not exist yet; waiting for the app to create it")
                    missing_noted = True
            if done():
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            if not batch:
                pause = args.interval if deadline is None else min(args.interval, deadline - time.monotonic())
                time.sleep(max(0.0, pause))
    except KeyboardInterrupt:
        note("interrupted")

    if not awaited:
        return EXIT_OK
    failed = [rid for rid in awaited if rid in outcome and not outcome[rid].ended_well]
    pending = [rid for rid in awaited if rid not in outcome]
    succeeded = [rid for rid in awaited if rid in outcome and outcome[rid].ended_well]
    if failed:
        named = ", ".join(_failure_name(rid, outcome[rid]) for rid in failed)
        note(f"{len(failed)} of {len(awaited)} request(s) failed: {named}")
    if pending:
        why = f"timed out after {args.timeout:g} s" if deadline is not None and not done() else "stopped"
        note(f"{why}; no outcome yet for {len(pending)} request(s): {', '.join(map(printable, pending))}")
    if len(succeeded) == len(awaited):
        note(f"all {len(awaited)} request(s) succeeded")
        return EXIT_OK
    return EXIT_FAILED


def _failure_name(request_id: str, event: Event) -> str:
    """The requestId of a request that did not end well; a policy's says how it ended."""
    name = printable(request_id)
    if event.is_policy and event.status == COMPLETED:
        return f"{name} (policy Completed with {event.failed_deletions} failed deletion(s))"
    if event.is_policy:
        return f"{name} (policy Failed)"
    return name
