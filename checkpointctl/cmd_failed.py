"""`checkpointctl failed`: `list` (cmd_failed_list.py; also `failed` alone) and `resubmit REQUEST_ID`,
which sends a request that ended `Failed` once more, rebuilt from its event.

The `Failed` event (contract section 4) carries what the request said: resourceUri, checkpointId,
correlationId, requestId (and the traceparent). A failure with `InvalidRequest` is refused: the same
request would fail the same way.
"""

from __future__ import annotations

import argparse

from . import cmd_failed_list
from .cmd_enqueue import deliver
from .console import EXIT_FAILED, EXIT_USAGE, error, note
from .events import Event, human_line, printable
from .failures import (
    CONSUMED_HINT,
    INVALID_REQUEST,
    WOULD_FAIL_AGAIN,
    Source,
    add_source_options,
    error_code,
    error_of,
    is_failed,
    rebuild,
)
from .options import add_command, add_connection_options, add_group, identifier

GROUP_EXAMPLES = """\
examples:
  python -m checkpointctl failed                         # = failed list: the Failed events, by error code
  python -m checkpointctl failed --scan --resubmit --code RetriesExhausted
  python -m checkpointctl failed resubmit 6f1c2b4e-...

Run `python -m checkpointctl failed <list|resubmit> --help` for each one's options.
"""

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
        help="list the requests that ended Failed, grouped by error code, and resubmit them",
        description="The Failed events waiting on the events queue, and their requests sent again. "
        "Without an action: `failed list` (its options may follow `failed`).",
        epilog=GROUP_EXAMPLES,
        default_action="list",
    )
    cmd_failed_list.add_parser(actions)
    resubmit = add_command(
        actions,
        "resubmit",
        help="send the request of one Failed event again",
        description="Find the Failed event of a request and send the request again.",
        epilog=EXAMPLES,
    )
    resubmit.add_argument(
        "request_id", type=identifier("requestId"), metavar="REQUEST_ID", help="the requestId that failed"
    )
    add_source_options(resubmit)
    resubmit.add_argument("--json", action="store_true", help="print a JSON object, as enqueue --json does")
    resubmit.add_argument("--dry-run", action="store_true", help="print the message that would be sent; send nothing")
    add_connection_options(resubmit)
    resubmit.set_defaults(run=run_resubmit)


def _find(args: argparse.Namespace) -> Event | None:
    with Source(args) as source:
        for event in source.events():
            if is_failed(event) and event.request_id == args.request_id:
                return event
    if source.missing:
        error(f"the events queue {source.queue} does not exist")
    elif source.kind == "file":
        error(f"no Failed event for requestId {printable(args.request_id)} {source.described()}")
    else:
        error(f"no Failed event for requestId {printable(args.request_id)} {source.described()}; {CONSUMED_HINT}")
    return None


def run_resubmit(args: argparse.Namespace) -> int:
    event = _find(args)
    if event is None:
        return EXIT_FAILED
    note(f"found: {human_line(event)}")
    if error_code(event) == INVALID_REQUEST:
        error(
            f"request {printable(args.request_id)} failed with {INVALID_REQUEST} "
            f"({printable(error_of(event).get('message') or '')}): {WOULD_FAIL_AGAIN}"
        )
        error("nothing was sent")
        return EXIT_USAGE
    item, problem, warnings = rebuild(event)
    for warning in warnings:
        note(f"warning: {warning}")
    if problem is not None:
        error(f"invalid request: {problem}")
        error("nothing was sent")
        return EXIT_USAGE
    return deliver(args, [item], origins={item.request_id: args.request_id}, send=not args.dry_run)
