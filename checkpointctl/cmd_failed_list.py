"""`checkpointctl failed list` (also `failed` alone): the `Failed` events waiting on the events queue,
grouped by error code (`data.error.code`), and with `--resubmit` their requests sent again.

`--resubmit` rebuilds the request of each listed failure as `failed resubmit` does (`failures.rebuild`: a
new requestId, the first try's correlationId) and sends them with enqueue's `deliver`, once confirmed: a
question on a terminal, or `--yes`. InvalidRequest failures are never sent: they would fail again. With
`--resubmit`, stdout carries only what was sent (enqueue's output, which `watch --until-done-file` reads);
the listing, the plan and the question go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from .cmd_enqueue import deliver
from .connection import UsageError
from .console import EXIT_FAILED, EXIT_OK, error, note, out, say
from .events import Event, compact_json, printable
from .failures import INVALID_REQUEST, WOULD_FAIL_AGAIN, Source, add_source_options, error_code, error_of, is_failed
from .failures import rebuild as rebuild_request
from .messages import Prepared
from .options import add_command, add_connection_options, identifier, whole_number
from .queueops import PEEK_LIMIT

MAX_LIMIT = 100_000
MAX_MESSAGE_SHOWN = 160  # characters of an error message's first line shown by the human-readable listing
NO_CODE = "(no code)"

EXAMPLES = """\
examples:
  python -m checkpointctl failed                  # the same as `failed list`: peeks at the first 32 events
  python -m checkpointctl failed list --scan --json
  python -m checkpointctl failed list --events-file events.jsonl --code RetriesExhausted

  # send the requests of the RetriesExhausted and OperationTimedOut failures again (it asks first)
  python -m checkpointctl failed list --scan --resubmit --code RetriesExhausted --code OperationTimedOut

  # no terminal to ask on: --yes; stdout has the new requestIds only
  python -m checkpointctl failed list --resubmit --yes > sent.txt &&
      python -m checkpointctl watch --until-done-file sent.txt --timeout 3600

Events are found as `failed resubmit` finds them: a peek (the first 32 visible events) by default,
--scan for the whole queue (received and made visible again, never deleted), --events-file for a saved
`watch --json` output. A request repeated on the queue (delivery is at least once) is listed once.
--resubmit sends each listed request again as a new request (a new requestId, the first try's
correlationId), never an InvalidRequest one (listed as refused): it prints what it would send, then asks
`Resubmit N request(s)? [y/N]` on a terminal; without a terminal it needs --yes. Exit codes: 0 done;
1 the answer was no (nothing sent), or the queue service failed; 2 bad usage (nothing sent).
"""


def add_parser(actions) -> None:
    listing = add_command(
        actions,
        "list",
        help="the Failed events waiting, grouped by error code (what `failed` alone runs)",
        description="List the Failed events waiting on the events queue, grouped by error code; "
        "with --resubmit, send their requests again as new requests, once confirmed.",
        epilog=EXAMPLES,
    )
    add_source_options(listing)
    listing.add_argument(
        "--code",
        action="append",
        type=identifier("error code"),
        metavar="CODE",
        help="only the failures with this error code (data.error.code); the flag may be repeated",
    )
    listing.add_argument(
        "--limit",
        type=whole_number(1, MAX_LIMIT),
        metavar="N",
        help="only the first N Failed events found (after --code); reading stops there",
    )
    listing.add_argument(
        "--json", action="store_true", help="one JSON object; with --resubmit one per request sent, as enqueue --json"
    )
    again = listing.add_argument_group("resubmitting")
    again.add_argument(
        "--resubmit",
        action="store_true",
        help="send the listed requests again, each a new request (never an InvalidRequest one); asks first",
    )
    again.add_argument("--yes", "-y", action="store_true", help="with --resubmit: send without asking")
    again.add_argument(
        "--dry-run", action="store_true", help="with --resubmit: print the messages that would be sent; send nothing"
    )
    add_connection_options(listing)
    listing.set_defaults(run=run)


@dataclass(frozen=True)
class Listing:
    failures: list[Event]  # in the order read, each request once
    source: Source
    limited: bool  # --limit stopped the reading


def run(args: argparse.Namespace) -> int:
    _check_usage(args)
    listing = _collect(args)
    if listing.source.missing:
        note(f"the events queue {listing.source.queue} does not exist (the app has written no event yet)")
        if not args.json or args.resubmit:
            return EXIT_OK
    groups = _groups(listing.failures)
    if not args.resubmit:
        for line in [compact_json(_document(listing, groups, args))] if args.json else _human(listing, groups, args):
            out(line)
        return EXIT_OK
    for line in _human(listing, groups, args, requests=False):  # the plan names the requests
        say(line)
    return _resubmit(args, listing.failures)


def _terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _check_usage(args: argparse.Namespace) -> None:
    if not args.resubmit:
        given = [flag for flag, on in (("--yes", args.yes), ("--dry-run", args.dry_run)) if on]
        if given:
            raise UsageError(f"{' and '.join(given)}: only with --resubmit")
    elif not (args.yes or args.dry_run):
        if args.events_file == "-":
            raise UsageError(
                "--events-file - reads stdin, where the answer to the question would come from: give --yes"
            )
        if not _terminal():
            raise UsageError(
                "--resubmit asks before it sends, and stdin is not a terminal: give --yes to send without asking "
                "(or --dry-run to see what would be sent); nothing was sent"
            )


def _collect(args: argparse.Namespace) -> Listing:
    wanted = set(args.code or ())
    failures: list[Event] = []
    seen: set[str] = set()
    with Source(args) as source:
        for event in source.events():
            key = event.request_id or event.event_id or event.message_id
            if not is_failed(event) or key in seen:  # a redelivered event repeats its request
                continue
            seen.add(key)
            if wanted and error_code(event) not in wanted:
                continue
            failures.append(event)
            if args.limit is not None and len(failures) >= args.limit:
                return Listing(failures, source, True)
    return Listing(failures, source, False)


def _groups(failures: list[Event]) -> list[tuple[str | None, list[Event]]]:
    """(code, its failures) for each error code, the most frequent first."""
    groups: dict[str | None, list[Event]] = {}
    for event in failures:
        groups.setdefault(error_code(event), []).append(event)
    return sorted(groups.items(), key=lambda group: (-len(group[1]), group[0] or ""))


def _one_line(message) -> str:
    if not isinstance(message, str) or not message.strip():
        return "(no message)"
    lines = message.strip().splitlines()
    cut = len(lines) > 1 or len(lines[0]) > MAX_MESSAGE_SHOWN
    return printable(lines[0][:MAX_MESSAGE_SHOWN].rstrip()) + (" ..." if cut else "")


def _request_text(event: Event) -> str:
    data = event.data
    parts = [printable(event.request_id or "-"), printable(data.get("resourceUri") or "-")]
    if data.get("checkpointId") is not None:
        parts.append(f"checkpoint={printable(data['checkpointId'])}")
    return "  ".join(parts)


def _header(listing: Listing, args: argparse.Namespace) -> str:
    source = listing.source
    found = f"{len(listing.failures)} Failed event(s)"
    if args.code:
        found += " with code " + ", ".join(printable(code) for code in args.code)
    if source.kind == "file":
        text = f"{found} among the {source.read} event(s) in {printable(args.events_file)}"
    elif source.kind == "scan":
        text = f"{found} among the {source.read} event(s) of {source.queue} (the whole queue, scanned)"
    else:
        text = f"{found} among the first {source.read} visible event(s) of {source.queue}"
    if listing.limited:
        return f"{text}; stopped at --limit {args.limit}"
    if source.kind == "peek" and source.read >= PEEK_LIMIT:
        return f"{text}; a peek sees at most {PEEK_LIMIT}: --scan looks through the whole queue"
    return text


def _human(listing: Listing, groups, args: argparse.Namespace, requests: bool = True) -> list[str]:
    lines = [_header(listing, args)]
    names = [printable(code) if code is not None else NO_CODE for code, _ in groups]
    width = max(map(len, names), default=0)
    for name, (code, events) in zip(names, groups, strict=True):
        refused = "  (never resubmitted: it would fail again)" if code == INVALID_REQUEST else ""
        lines.append(f"  {name:<{width}}  {len(events):>5}{refused}")
    for name, (_, events) in zip(names, groups, strict=True) if requests else ():
        lines += ["", f"{name} ({len(events)})"]
        lines += [f"  {_request_text(e)}  {_one_line(error_of(e).get('message'))}" for e in events]
    return lines


def _document(listing: Listing, groups, args: argparse.Namespace) -> dict:
    source = listing.source
    return {
        "source": source.kind,
        "from": args.events_file if source.kind == "file" else source.queue,
        "eventsRead": source.read,
        "failed": len(listing.failures),
        "limited": listing.limited,
        "codes": [
            {
                "code": code,
                "count": len(events),
                "resubmittable": code != INVALID_REQUEST,
                "requests": [_record(event) for event in events],
            }
            for code, events in groups
        ],
    }


def _record(event: Event) -> dict:
    data = event.data
    return {
        "requestId": event.request_id,
        "resourceUri": data.get("resourceUri"),
        "checkpointId": data.get("checkpointId"),
        "correlationId": data.get("correlationId"),
        "time": event.document.get("time"),
        "message": error_of(event).get("message"),
        "messageId": event.message_id,
    }


# --- --resubmit -------------------------------------------------------------------------------------------


def _plan(failures: list[Event]) -> list[tuple[Event, Prepared]]:
    """The requests to send again, each with the failure it came from; what is refused is said."""
    plan: list[tuple[Event, Prepared]] = []
    invalid = [event for event in failures if error_code(event) == INVALID_REQUEST]
    if invalid:
        names = ", ".join(printable(event.request_id or "-") for event in invalid)
        note(f"refused, not sent: {len(invalid)} {INVALID_REQUEST} failure(s) ({WOULD_FAIL_AGAIN}): {names}")
    for event in failures:
        if error_code(event) == INVALID_REQUEST:
            continue
        item, problem, warnings = rebuild_request(event)
        for warning in warnings:
            note(f"warning: {warning}")
        if problem is not None:
            note(f"refused, not sent: {printable(event.request_id or '-')}: invalid request: {problem}")
        else:
            plan.append((event, item))
    return plan


def _confirmed(count: int) -> bool:
    sys.stderr.write(f"Resubmit {count} request(s)? [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if not answer.endswith("\n"):
        sys.stderr.write("\n")
    return answer.strip().lower() in ("y", "yes")


def _resubmit(args: argparse.Namespace, failures: list[Event]) -> int:
    say("")
    plan = _plan(failures)
    if not plan:
        note("nothing to resubmit")
        return EXIT_OK
    say(f"would send {len(plan)} request(s), each a new request (a new requestId, the first try's correlationId):")
    for event, item in plan:
        say(f"  {_request_text(event)}  {printable(error_code(event) or NO_CODE)}  -> new requestId {item.request_id}")
    if not (args.dry_run or args.yes or _confirmed(len(plan))):
        error("nothing was sent")
        return EXIT_FAILED
    origins = {item.request_id: event.request_id for event, item in plan}
    code = deliver(args, [item for _, item in plan], origins, send=not args.dry_run)
    if code == EXIT_OK and not args.dry_run:
        note(f"resubmitted {len(plan)} request(s)")
    return code
