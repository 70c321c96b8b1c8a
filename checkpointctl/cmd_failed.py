"""`checkpointctl failed resubmit`: send a request that ended `Failed` once more, rebuilt from its event.

The `Failed` event (contract section 4) carries what the request said: resourceUri, checkpointId,
correlationId, requestId (and the traceparent). A failure with `InvalidRequest` is refused: the same
request would fail the same way.
"""

from __future__ import annotations

import argparse
import uuid

from shared.events import EventStatus

from .cmd_enqueue import deliver
from .console import EXIT_FAILED, EXIT_USAGE, error, note
from .events import Event, human_line, parse_event, printable
from .messages import prepare
from .options import add_command, add_connection_options, add_group, identifier, open_queues, read_source, target
from .queueops import PEEK_LIMIT, Scan, peek

INVALID_REQUEST = "InvalidRequest"

EXAMPLES = """\
examples:
  # find the Failed event on the events queue (peek: the first 32 visible events) and send the request again
  python -m checkpointctl failed resubmit 6f1c2b4e-...

  # look through the whole events queue, then follow the new try
  python -m checkpointctl failed resubmit 6f1c2b4e-... --scan > sent.txt &&
      python -m checkpointctl watch --until-done-file sent.txt --timeout 3600

  # the event was consumed by `watch --json` and saved there
  python -m checkpointctl failed resubmit my-id-2 --events-file events.jsonl

The request is rebuilt from the event (resourceUri, checkpointId, correlationId, traceparent), validated
with the app's rules and sent with a new requestId (a UUID, printed) and the same correlationId: a
requestId ends in one terminal event, so a new try is a new request.
A failure with InvalidRequest is refused (exit 2): it would fail again. No Failed event found: exit 1.
"""


def add_parser(commands) -> None:
    actions = add_group(
        commands,
        "failed",
        help="resubmit a request that ended Failed",
        description="Send a request that ended Failed once more, rebuilt from its Failed event.",
    )
    resubmit = add_command(
        actions,
        "resubmit",
        help="send the request of a Failed event again",
        description="Find the Failed event of a request and send the request again.",
        epilog=EXAMPLES,
    )
    resubmit.add_argument(
        "request_id", type=identifier("requestId"), metavar="REQUEST_ID", help="the requestId that failed"
    )
    source = resubmit.add_mutually_exclusive_group()
    source.add_argument(
        "--scan",
        action="store_true",
        help="look through the whole events queue: events are received, hidden for at most a minute while "
        "they are read, and made visible again (never deleted)",
    )
    source.add_argument(
        "--events-file",
        metavar="F",
        help="find the event in F (`watch --json` output, one event a line; - reads stdin), not on the queue",
    )
    resubmit.add_argument("--json", action="store_true", help="print a JSON object, as enqueue --json does")
    resubmit.add_argument("--dry-run", action="store_true", help="print the message that would be sent; send nothing")
    add_connection_options(resubmit)
    resubmit.set_defaults(run=run_resubmit)


def _failed_of(request_id: str, message_id: str, content) -> Event | None:
    event = parse_event(message_id, content)
    return event if event.status == EventStatus.FAILED and event.request_id == request_id else None


def _from_file(args: argparse.Namespace) -> Event | None:
    for number, line in enumerate(read_source(args.events_file, "--events-file"), start=1):
        if isinstance(line, bytes):
            line = line.decode("utf-8-sig", errors="replace")
        if line.strip() and (event := _failed_of(args.request_id, f"line {number}", line.strip())):
            return event
    error(f"no Failed event for requestId {printable(args.request_id)} in {printable(args.events_file)}")
    return None


def _from_queue(args: argparse.Namespace) -> Event | None:
    where = target(args)
    client = open_queues(args, where).client(where.events_queue)
    peeked = peek(client)
    if peeked is None:
        error(f"the events queue {where.events_queue} does not exist")
        return None
    for message in peeked:
        if event := _failed_of(args.request_id, message.id, message.content):
            return event
    if args.scan:
        scan = Scan(client)
        try:
            for page in scan.pages():
                for message in page:
                    if event := _failed_of(args.request_id, message.id, message.content):
                        return event
        finally:
            scan.release()
        looked = f"on {where.events_queue}"
    else:
        looked = (
            f"among the first {len(peeked)} visible event(s) of {where.events_queue} (a peek sees at most "
            f"{PEEK_LIMIT}; --scan looks through the whole queue)"
        )
    error(
        f"no Failed event for requestId {printable(args.request_id)} {looked}; an event that a consumer "
        "took (watch, a Logic App) is gone from the queue: --events-file reads a saved `watch --json` output"
    )
    return None


def run_resubmit(args: argparse.Namespace) -> int:
    event = _from_file(args) if args.events_file is not None else _from_queue(args)
    if event is None:
        return EXIT_FAILED
    note(f"found: {human_line(event)}")
    failure = event.data.get("error")
    if isinstance(failure, dict) and failure.get("code") == INVALID_REQUEST:
        error(
            f"request {printable(args.request_id)} failed with {INVALID_REQUEST} "
            f"({printable(failure.get('message') or '')}): sent again it would fail again; "
            "correct the request and send it with `checkpointctl enqueue`"
        )
        error("nothing was sent")
        return EXIT_USAGE

    data = event.data
    request = {"resourceUri": data.get("resourceUri")}
    request["requestId"] = str(uuid.uuid4())  # one terminal event per requestId: a new try is a new request
    for field in ("checkpointId", "correlationId"):
        if data.get(field) is not None:
            request[field] = data[field]
    if event.document.get("traceparent") is not None:
        request["traceparent"] = event.document["traceparent"]
    item, problem, warnings = prepare(request, where=f"the Failed event of {printable(args.request_id)}")
    for warning in warnings:
        note(f"warning: {warning}")
    if problem is not None:
        error(f"invalid request: {problem}")
        error("nothing was sent")
        return EXIT_USAGE
    return deliver(args, [item])
