"""`checkpointctl poison list|resubmit` (`replay` = `resubmit`): look at the requests in the poison queue,
and send them again.

A message lands in `<requests queue>-poison` when the app's submit function failed on it five times (a
crash, a killed worker). `list` only peeks. `resubmit` receives the chosen messages, sends each one's
text as it is to the requests queue, then deletes it from the poison queue, in that order: a run that
dies in between leaves a duplicate (the app verifies a redelivered request), never a loss.
"""

from __future__ import annotations

import argparse
import json

from azure.core.exceptions import AzureError

from .cmd_status import queue_count
from .connection import ensure_queue
from .console import EXIT_FAILED, EXIT_OK, EXIT_USAGE, describe_service_error, error, note, out
from .events import printable
from .options import add_command, add_connection_options, add_group, identifier, open_queues, target, whole_number
from .poisoned import Poisoned, human_line, json_line, read_poisoned, request_text
from .queueops import PEEK_LIMIT, Scan, delete_quietly, peek

LIST_EXAMPLES = """\
examples:
  python -m checkpointctl poison list
  python -m checkpointctl poison list --limit 5 --json

Only peeks: nothing is received or deleted, so a peek sees at most the first 32 visible messages.
Each message is decoded as the app decodes it (plain JSON or base64; plain, Event Grid or CloudEvents
envelope); one that the app could not read is shown as such, with its text.
"""

RESUBMIT_EXAMPLES = """\
examples:
  python -m checkpointctl poison resubmit --dry-run --all
  python -m checkpointctl poison resubmit --message-id 6b1e0c52-... --message-id 0f3a9d11-...
  python -m checkpointctl poison resubmit --all --json > sent.jsonl &&
      python -m checkpointctl watch --until-done-file sent.jsonl --timeout 3600
  python -m checkpointctl poison replay --all     # replay is another name for resubmit: the same command

Each chosen message's text is sent to the requests queue as it is, then deleted from the poison queue
(a run that dies in between leaves a copy in both: the app verifies a redelivered request). A message
the app cannot read is never moved: --all leaves it where it is, --message-id refuses to move anything.
--dry-run only peeks (the first 32 visible messages) and moves nothing. Exit codes: 0 done; 1 a named
message is not in the poison queue, or the queue service failed; 2 bad usage or a named message the
app cannot read.
"""


def add_parser(commands) -> None:
    actions = add_group(
        commands,
        "poison",
        help="look at and resubmit the requests in the poison queue",
        description="Look at the requests that landed in the poison queue (<requests queue>-poison), "
        "and send them to the requests queue again.",
    )

    listing = add_command(
        actions,
        "list",
        help="show the poison messages (peek only)",
        description="Show the messages of the poison queue and the request each holds, without taking any.",
        epilog=LIST_EXAMPLES,
    )
    listing.add_argument(
        "--limit",
        type=whole_number(1, PEEK_LIMIT),
        default=PEEK_LIMIT,
        metavar="N",
        help=f"show at most N messages, 1 to {PEEK_LIMIT} (default {PEEK_LIMIT}, all a peek can see)",
    )
    listing.add_argument("--json", action="store_true", help="print one JSON object per message")
    add_connection_options(listing)
    listing.set_defaults(run=run_list)

    resubmit = add_command(
        actions,
        "resubmit",
        help="move poison messages back to the requests queue; `replay` is another name for it",
        description="Move poison messages back to the requests queue: send each one's text as it is, "
        "then delete it from the poison queue. `poison replay` is another name for `poison resubmit`: "
        "the same options, the same behaviour.",
        epilog=RESUBMIT_EXAMPLES,
        aliases=("replay",),
    )
    which = resubmit.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every message the app can read")
    which.add_argument(
        "--message-id",
        nargs="+",
        action="extend",
        type=identifier("queue message id"),
        metavar="ID",
        help="these messages (ids as `poison list` shows them); the flag may be repeated",
    )
    resubmit.add_argument("--dry-run", action="store_true", help="peek and show what would be moved; move nothing")
    resubmit.add_argument(
        "--json", action="store_true", help="print one JSON object per message moved (watch --until-done-file reads it)"
    )
    add_connection_options(resubmit)
    resubmit.set_defaults(run=run_resubmit)


# --- list ---------------------------------------------------------------------------------------------


def run_list(args: argparse.Namespace) -> int:
    where = target(args)
    client = open_queues(args, where).client(where.poison_queue)
    count = queue_count(client)
    peeked = peek(client, args.limit) if count["exists"] else None
    if peeked is None:
        note(f"poison queue {where.poison_queue} does not exist (nothing has landed in it yet)")
        return EXIT_OK
    if not args.json:
        out(
            f"poison queue {where.poison_queue}: about {count['approximateMessageCount']} message(s), "
            f"{len(peeked)} visible one(s) peeked"
        )
    for message in peeked:
        item = read_poisoned(message)
        out(json_line(item) if args.json else human_line(item))
    return EXIT_OK


# --- resubmit -----------------------------------------------------------------------------------------


class _Mover:
    """Sends poison messages to the requests queue, then deletes them from the poison queue."""

    def __init__(self, args: argparse.Namespace, poison, requests, scan: Scan | None):
        self._args = args
        self._poison = poison
        self._requests = requests
        self._scan = scan
        self.moved = 0

    def show(self, item: Poisoned, new_message_id: str | None) -> None:
        if self._args.json:
            record = {
                "requestId": item.request_id_after_move(new_message_id),
                "messageId": new_message_id,
                "queue": self._requests.queue_name,
                "fromMessageId": item.message_id,
            }
            if self._args.dry_run:
                record["dryRun"] = True
            out(json.dumps(record, ensure_ascii=True))
        elif new_message_id is None:
            out(f"would move {printable(item.message_id)}  {request_text(item)}")
        else:
            out(f"moved {printable(item.message_id)} -> {printable(new_message_id)}  {request_text(item)}")

    def move(self, item: Poisoned) -> None:
        if self.moved == 0:
            ensure_queue(self._requests)
        sent = self._requests.send_message(item.text)  # first the copy, then the delete: never a loss
        self.moved += 1
        deleted = delete_quietly(self._poison, item.message)
        self._scan.drop(item.message)
        self.show(item, sent.id)
        if not deleted:
            note(
                f"warning: {printable(item.message_id)} was sent but not deleted from the poison queue "
                "(someone else received it meanwhile); it may be sent twice"
            )

    def move_all(self, items: list[Poisoned]) -> bool:
        """Move `items` in order; False (and what was not moved said) when the queue service fails."""
        for item in items:
            try:
                self.move(item)
            except AzureError as exc:
                error(describe_service_error(exc))
                error(
                    f"moved {self.moved} message(s); {printable(item.message_id)} and the ones after it "
                    "were not moved (they stay in the poison queue)"
                )
                return False
        return True


def run_resubmit(args: argparse.Namespace) -> int:
    wanted = list(dict.fromkeys(args.message_id or []))
    where = target(args)
    queues = open_queues(args, where)
    poison = queues.client(where.poison_queue)
    requests = queues.client(where.requests_queue)
    if args.dry_run:
        return _dry_run(_Mover(args, poison, requests, None), poison, wanted)
    scan = Scan(poison)
    mover = _Mover(args, poison, requests, scan)
    try:
        code = _move_named(mover, scan, wanted) if wanted else _move_every(mover, scan)
    finally:
        scan.release()  # what was received and not moved is visible again at once
    if code == EXIT_OK:
        note(f"moved {mover.moved} message(s) from {where.poison_queue} to {where.requests_queue}")
    return code


def _pick(found: dict[str, Poisoned], wanted: list[str], where: str) -> tuple[list[Poisoned], int | None]:
    """The named messages, in the order named, and the exit code when the choice is refused: a message
    not there (1) or one the app cannot read (2). Nothing is moved then."""
    missing = [message_id for message_id in wanted if message_id not in found]
    chosen = [found[message_id] for message_id in wanted if message_id in found]
    unreadable = [item for item in chosen if item.request is None]
    for message_id in missing:
        error(f"{printable(message_id)} is not {where}")
    for item in unreadable:
        error(
            f"{printable(item.message_id)} is not a request the app can read ({printable(item.problem)}); "
            "sent again it would fail again"
        )
    if not missing and not unreadable:
        return chosen, None
    error("nothing was moved")
    return chosen, EXIT_FAILED if missing else EXIT_USAGE


def _move_named(mover: _Mover, scan: Scan, wanted: list[str]) -> int:
    found: dict[str, Poisoned] = {}
    for page in scan.pages():
        found.update((m.id, read_poisoned(m)) for m in page if m.id in wanted)
        if len(found) == len(wanted):
            break
    chosen, refused = _pick(found, wanted, "in the poison queue (or it is invisible: being handled right now)")
    if refused is not None:
        return refused
    return EXIT_OK if mover.move_all(chosen) else EXIT_FAILED


def _move_every(mover: _Mover, scan: Scan) -> int:
    left = 0
    for page in scan.pages():
        items = [read_poisoned(m) for m in page]
        for item in items:
            if item.request is None:  # stays hidden until the scan ends, then visible again in place
                left += 1
                note(f"left in the poison queue: {human_line(item)}")
        if not mover.move_all([item for item in items if item.request is not None]):
            return EXIT_FAILED
    if left:
        note(f"{left} message(s) the app cannot read were left in the poison queue")
    return EXIT_OK


def _dry_run(mover: _Mover, poison, wanted: list[str]) -> int:
    count = queue_count(poison)
    peeked = (peek(poison) if count["exists"] else None) or []
    items = [read_poisoned(m) for m in peeked]
    if wanted:
        where = f"among the first {PEEK_LIMIT} visible poison messages (a dry run only peeks)"
        chosen, refused = _pick({item.message_id: item for item in items}, wanted, where)
        if refused is not None:
            return refused
    else:
        chosen = [item for item in items if item.request is not None]
        for item in items:
            if item.request is None:
                note(f"would leave in the poison queue: {human_line(item)}")
    for item in chosen:
        mover.show(item, None)
    more = count["approximateMessageCount"] > len(peeked)
    note(
        f"dry run: would move {len(chosen)} message(s); nothing was moved"
        + (
            f" (the queue holds about {count['approximateMessageCount']}: a dry run peeks only the first {PEEK_LIMIT})"
            if more
            else ""
        )
    )
    return EXIT_OK
