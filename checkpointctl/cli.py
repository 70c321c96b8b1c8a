"""The command line: enqueue deletion requests, watch outcome events, show queue status.

Exit codes: 0 success; 1 a request failed (watch) or the queue service could not be reached;
2 bad usage (argparse errors, invalid requests, missing or malformed settings).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from datetime import UTC, datetime

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from shared.events import FAILED, SUCCEEDED
from shared.tracking import Operation

from .connection import DEFAULT_RETRIES, Queues, Target, UsageError, ensure_queue, public_url, resolve_target
from .events import Event, human_line, json_line, parse_event, printable
from .messages import (
    ENCODINGS,
    ENVELOPES,
    FLAG_FOR_FIELD,
    Prepared,
    Problem,
    prepare,
    read_json_lines,
)

PROG = "checkpointctl"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PEEK_LIMIT = 32  # the queue service returns at most 32 messages per peek or receive
RECEIVE_VISIBILITY_SECONDS = 30  # a received event stays hidden this long while it is printed and deleted
MAX_PROBLEMS_SHOWN = 20

# decode_request logs a warning when it drops an invalid traceparent; enqueue says so itself, once, with
# the line number. A NullHandler keeps Python's last-resort handler from printing the log record too.
logging.getLogger("shared.request").addHandler(logging.NullHandler())
# DefaultAzureCredential logs the failure it also raises; the raised one is printed (the log only with -v).
logging.getLogger("azure.identity").addHandler(logging.NullHandler())


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (never raises SystemExit)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if getattr(args, "verbose", False):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except AzureError as exc:
        _error(_describe_service_error(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:  # enqueue has printed the requestIds it sent before the interruption
        _note("interrupted")
        return EXIT_FAILED
    except BrokenPipeError:
        return EXIT_FAILED
    finally:
        for opened in _OPENED:
            opened.close()
        _OPENED.clear()


_OPENED: list[Queues] = []


def _open(args: argparse.Namespace, target: Target) -> Queues:
    queues = Queues(target.storage, args.retries)
    _OPENED.append(queues)  # closed (its credential) when the command ends
    return queues


# --- output helpers ---------------------------------------------------------------------------------


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _error(message: str) -> None:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    sys.stderr.flush()


def _note(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _describe_service_error(exc: AzureError) -> str:
    status = getattr(exc, "status_code", None)
    if isinstance(exc, ClientAuthenticationError) and status is None:
        # The credential's own text lists every way it tried; it is the useful part.
        return f"could not get a Microsoft Entra token (try `az login`): {str(exc).strip()}"
    if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
        return (
            f"the queue service refused access ({_first_line(exc)}); an identity needs the role "
            "'Storage Queue Data Contributor' on the storage account (or the queue), a connection string a valid key"
        )
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return f"could not reach the queue service: {_first_line(exc)}"
    return f"the queue service answered with an error: {_first_line(exc)}"


# --- the parser ---------------------------------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def _retries(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 10")
    return value


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection (default: the app's own settings from the environment)")
    where = group.add_mutually_exclusive_group()
    where.add_argument(
        "--connection-string",
        metavar="CS",
        help="storage connection string (default: env AzureWebJobsStorage; UseDevelopmentStorage=true = Azurite)",
    )
    where.add_argument(
        "--account-url",
        metavar="URL",
        help="https://<account>.queue.core.windows.net, signed in with DefaultAzureCredential (az login, "
        "managed identity, AZURE_* env); default: env AzureWebJobsStorage__queueServiceUri",
    )
    group.add_argument(
        "--requests-queue", metavar="NAME", help="default: env CHECKPOINT_REQUESTS_QUEUE or checkpoint-delete-requests"
    )
    group.add_argument(
        "--events-queue", metavar="NAME", help="default: env CHECKPOINT_EVENTS_QUEUE or checkpoint-delete-events"
    )
    group.add_argument(
        "--tracking-queue", metavar="NAME", help="default: env CHECKPOINT_TRACKING_QUEUE or checkpoint-delete-tracking"
    )
    group.add_argument(
        "--retries",
        type=_retries,
        default=DEFAULT_RETRIES,
        metavar="N",
        help=f"retries of a failed call to the queue service, about 1 s, 3 s, 5 s apart (default {DEFAULT_RETRIES})",
    )
    group.add_argument("--verbose", "-v", action="store_true", help="log the SDK's requests to stderr")


ENQUEUE_EXAMPLES = """\
examples:
  # one request, against a local Azurite
  python -m checkpointctl enqueue --connection-string UseDevelopmentStorage=true \\
      --resource-uri /subscriptions/<sub>/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/vm1 \\
      --checkpoint-id cp-123 --correlation-id change-42

  # many requests, one JSON object per line, as CloudEvents in base64, ids kept for `watch`
  python -m checkpointctl enqueue --file requests.jsonl --envelope cloudevents --encoding base64 > sent.txt

  # from stdin, validated only (nothing sent)
  cat requests.jsonl | python -m checkpointctl enqueue --file - --dry-run

Every request is validated with the app's own rules (shared.request.decode_request) before anything
is sent; one invalid request means nothing is sent (exit 2). A request without requestId is given a
new UUID. The requestIds sent are printed one per line (--json: one JSON object per line).
"""

WATCH_EXAMPLES = """\
examples:
  # follow the events until Ctrl-C (consumes them: received, printed, deleted)
  python -m checkpointctl watch

  # wait for the requests just sent; exit 0 if all succeeded, 1 if one failed or 30 min passed
  python -m checkpointctl watch --until-done-file sent.txt --timeout 1800

  # look without consuming, as JSON lines
  python -m checkpointctl watch --peek --json --until-done 3f2c... --timeout 60

By default watch is a consumer: each event is received, printed, then deleted, so nothing else reading
the events queue sees it. --peek deletes nothing, but a peek sees at most the first 32 visible messages
of the queue: when more events are waiting, later ones show only once earlier ones are consumed.
Exit codes: 0 every awaited request Succeeded (or nothing awaited); 1 one Failed, or --timeout came first;
2 bad usage. A repeated event id (delivery is at least once) is printed once.
"""

STATUS_EXAMPLES = """\
examples:
  python -m checkpointctl status
  python -m checkpointctl status --json --account-url https://myaccount.queue.core.windows.net

Counts are the service's approximate message counts (invisible messages included). The age of the
oldest operation in flight comes from the tracking messages a peek can see (at most 32, visible ones
only: operations waiting for their next poll are invisible), so it is the oldest visible one.
"""


def _version() -> str:
    """The installed distribution's version, else the one pyproject.toml gives (run from a checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scvmm-checkpoint-delete")
    except PackageNotFoundError:
        import tomllib
        from pathlib import Path

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=_Formatter,
        description="Send checkpoint-deletion requests to the function app, follow its outcome events, "
        "and look at its queues.",
        epilog="exit codes: 0 success, 1 a request failed or the queue service could not be reached, 2 bad usage\n"
        "run `python -m checkpointctl <command> --help` for a command's options and examples; see docs/cli.md",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="<command>")

    enqueue = commands.add_parser(
        "enqueue",
        formatter_class=_Formatter,
        help="send deletion requests to the requests queue",
        description="Send deletion requests to the requests queue.",
        epilog=ENQUEUE_EXAMPLES,
    )
    one = enqueue.add_argument_group("one request from flags")
    one.add_argument("--resource-uri", metavar="ID", help="ARM resource id of the machine (required without --file)")
    one.add_argument("--checkpoint-id", metavar="ID", help="checkpoint to delete (omitted: the request body is {})")
    one.add_argument("--request-id", metavar="ID", help="default: a new UUID, printed")
    one.add_argument("--correlation-id", metavar="ID", help="echoed into every event")
    one.add_argument("--traceparent", metavar="TP", help="W3C traceparent carried into every event")
    many = enqueue.add_argument_group("many requests")
    many.add_argument("--file", "-f", metavar="F", help="JSON Lines file, one request object per line; - reads stdin")
    shape = enqueue.add_argument_group("message shape")
    shape.add_argument(
        "--envelope",
        choices=ENVELOPES,
        default="plain",
        help="plain request object, Event Grid event, or CloudEvents 1.0 (id = requestId) (default plain)",
    )
    shape.add_argument("--encoding", choices=ENCODINGS, default="plain", help="message text (default plain)")
    enqueue.add_argument("--json", action="store_true", help="print one JSON object per request sent")
    enqueue.add_argument("--dry-run", action="store_true", help="validate and print the messages; send nothing")
    _add_connection_options(enqueue)
    enqueue.set_defaults(run=run_enqueue)

    watch = commands.add_parser(
        "watch",
        formatter_class=_Formatter,
        help="follow the outcome events",
        description="Follow the events queue and print each outcome event.",
        epilog=WATCH_EXAMPLES,
    )
    watch.add_argument("--peek", action="store_true", help="only peek (at most 32 visible messages); delete nothing")
    watch.add_argument("--json", action="store_true", help="print each event's JSON on one line")
    watch.add_argument(
        "--until-done", nargs="+", metavar="ID", default=[], help="stop once each requestId had Succeeded or Failed"
    )
    watch.add_argument(
        "--until-done-file",
        metavar="F",
        help="requestIds to wait for, from enqueue's output (plain or --json); - reads stdin",
    )
    watch.add_argument("--timeout", type=_positive_float, metavar="S", help="stop after S seconds")
    watch.add_argument(
        "--interval",
        type=_positive_float,
        default=2.0,
        metavar="S",
        help="seconds between looks at an empty queue (default 2)",
    )
    _add_connection_options(watch)
    watch.set_defaults(run=run_watch)

    status = commands.add_parser(
        "status",
        formatter_class=_Formatter,
        help="count what waits in the app's queues",
        description="Requests waiting, operations in flight (and the oldest visible one's age), "
        "events waiting, poison messages, events waiting to be published to Event Grid.",
        epilog=STATUS_EXAMPLES,
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")
    _add_connection_options(status)
    status.set_defaults(run=run_status)
    return parser


def _target(args: argparse.Namespace) -> Target:
    return resolve_target(
        connection_string=args.connection_string,
        account_url=args.account_url,
        queue_names={
            "requests_queue": args.requests_queue,
            "tracking_queue": args.tracking_queue,
            "events_queue": args.events_queue,
        },
    )


# --- enqueue ------------------------------------------------------------------------------------------


def _read_source(path: str, flag: str) -> list:
    if path == "-":
        stream = getattr(sys.stdin, "buffer", sys.stdin)
        return stream.readlines()
    try:
        with open(path, "rb") as f:
            return f.readlines()
    except OSError as exc:
        raise UsageError(f"{flag} {path}: {exc.strerror or exc}") from None


def run_enqueue(args: argparse.Namespace) -> int:
    flag_values = {field: getattr(args, flag[2:].replace("-", "_")) for field, flag in FLAG_FOR_FIELD.items()}
    now = datetime.now(UTC)
    shape = {"envelope": args.envelope, "encoding": args.encoding, "now": now}
    prepared: list[Prepared] = []
    problems: list[Problem] = []
    warnings: list[str] = []

    if args.file is not None:
        given = [FLAG_FOR_FIELD[field] for field, value in flag_values.items() if value is not None]
        if given:
            raise UsageError(f"--file cannot be combined with {', '.join(given)}; put those fields in the file")
        for number, parsed in read_json_lines(_read_source(args.file, "--file")):
            if isinstance(parsed, Problem):
                problems.append(parsed)
                continue
            item, problem, notes = prepare(parsed, where=f"line {number}", line=number, **shape)
            warnings += notes
            if problem:
                problems.append(problem)
            else:
                prepared.append(item)
        if not prepared and not problems:
            raise UsageError(f"--file {args.file}: no requests in it")
    else:
        if flag_values["resourceUri"] is None:
            raise UsageError("give --resource-uri (one request) or --file (JSON Lines)")
        request = {field: value for field, value in flag_values.items() if value is not None}
        item, problem, notes = prepare(request, where="flags", **shape)
        warnings += notes
        if problem:
            problems.append(problem)
        else:
            prepared.append(item)

    seen: dict[str, str] = {}
    for item in prepared:
        if item.request_id in seen:
            problems.append(Problem(item.where, "requestId", f"{item.request_id!r} repeats {seen[item.request_id]}"))
        seen.setdefault(item.request_id, item.where)

    for warning in warnings:
        _note(f"warning: {warning}")
    if problems:
        problems.sort(key=lambda p: int(p.where.split()[1]) if p.where.startswith("line ") else 0)
        for problem in problems[:MAX_PROBLEMS_SHOWN]:
            _error(f"invalid request: {problem}")
        if len(problems) > MAX_PROBLEMS_SHOWN:
            _error(f"... and {len(problems) - MAX_PROBLEMS_SHOWN} more invalid requests")
        _error("nothing was sent")
        return EXIT_USAGE

    if args.dry_run:
        for item in prepared:
            _out(item.text)
        _note(f"dry run: {len(prepared)} valid request(s); nothing was sent")
        return EXIT_OK

    target = _target(args)
    queues = _open(args, target)
    client = queues.client(target.requests_queue)
    ensure_queue(client)
    for sent, item in enumerate(prepared):
        try:
            message = client.send_message(item.text)
        except AzureError as exc:
            _error(_describe_service_error(exc))
            _error(
                f"sent {sent} of {len(prepared)} request(s); {item.where} and the ones after it were not sent"
                if len(prepared) > 1
                else "the request was not sent"
            )
            return EXIT_FAILED
        if args.json:
            record = {"requestId": item.request_id, "messageId": message.id, "queue": target.requests_queue}
            if item.line is not None:
                record["line"] = item.line
            _out(json.dumps(record, ensure_ascii=False))
        else:
            _out(item.request_id)
    return EXIT_OK


# --- watch --------------------------------------------------------------------------------------------


def _awaited_ids(args: argparse.Namespace) -> list[str]:
    ids = list(args.until_done)
    if args.until_done_file is not None:
        for number, line in enumerate(_read_source(args.until_done_file, "--until-done-file"), start=1):
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


def run_watch(args: argparse.Namespace) -> int:
    awaited = _awaited_ids(args)
    target = _target(args)
    queues = _open(args, target)
    client = queues.client(target.events_queue)
    outcome: dict[str, str] = {}  # awaited requestId -> Succeeded/Failed (the first terminal event wins)
    printed_events: set[str] = set()
    peeked_messages: set[str] = set()
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    missing_noted = False

    def show(event: Event) -> None:
        if event.event_id is not None:
            if event.event_id in printed_events:
                return
            printed_events.add(event.event_id)
        _out(json_line(event) if args.json else human_line(event))
        if event.terminal and event.request_id in awaited_set and event.request_id not in outcome:
            outcome[event.request_id] = event.status

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
                        _delete(client, message)
                        if done():
                            _release(client, batch[index + 1 :])
                            break
            except ResourceNotFoundError:
                batch = []
                if not missing_noted:
                    _note(f"queue {target.events_queue} does not exist yet; waiting for the app to create it")
                    missing_noted = True
            if done():
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            if not batch:
                pause = args.interval if deadline is None else min(args.interval, deadline - time.monotonic())
                time.sleep(max(0.0, pause))
    except KeyboardInterrupt:
        _note("interrupted")

    if not awaited:
        return EXIT_OK
    failed = [rid for rid in awaited if outcome.get(rid) == FAILED]
    pending = [rid for rid in awaited if rid not in outcome]
    succeeded = [rid for rid in awaited if outcome.get(rid) == SUCCEEDED]
    if failed:
        _note(f"{len(failed)} of {len(awaited)} request(s) failed: {', '.join(map(printable, failed))}")
    if pending:
        why = f"timed out after {args.timeout:g} s" if deadline is not None and not done() else "stopped"
        _note(f"{why}; no outcome yet for {len(pending)} request(s): {', '.join(map(printable, pending))}")
    if len(succeeded) == len(awaited):
        _note(f"all {len(awaited)} request(s) succeeded")
        return EXIT_OK
    return EXIT_FAILED


def _delete(client, message) -> None:
    # Not found: someone else deleted it, or our receipt expired; it was printed anyway.
    with contextlib.suppress(ResourceNotFoundError):
        client.delete_message(message)


def _release(client, messages) -> None:
    """Make received but unprinted messages visible again at once, for whoever reads next."""
    for message in messages:
        with contextlib.suppress(AzureError):  # else they reappear by themselves after RECEIVE_VISIBILITY_SECONDS
            client.update_message(message, visibility_timeout=0)


# --- status -------------------------------------------------------------------------------------------


def _queue_count(client) -> dict:
    try:
        properties = client.get_queue_properties()
    except ResourceNotFoundError:
        return {"queue": client.queue_name, "exists": False, "approximateMessageCount": 0}
    return {"queue": client.queue_name, "exists": True, "approximateMessageCount": properties.approximate_message_count}


def _oldest_visible(client, now: float) -> dict | None:
    try:
        peeked = client.peek_messages(max_messages=PEEK_LIMIT)
    except ResourceNotFoundError:
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
    if not peeked:
        return None
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


def run_status(args: argparse.Namespace) -> int:
    target = _target(args)
    queues = _open(args, target)
    clients = {
        "requests": queues.client(target.requests_queue),
        "tracking": queues.client(target.tracking_queue),
        "events": queues.client(target.events_queue),
        "poison": queues.client(target.poison_queue),
        "outbox": queues.client(target.outbox_queue),
        "deadletter": queues.client(target.deadletter_queue),
    }
    report: dict = {"queueService": public_url(clients["requests"]).rsplit("/", 1)[0]}
    for role, client in clients.items():
        report[role] = _queue_count(client)
    report["tracking"]["oldestVisible"] = (
        _oldest_visible(clients["tracking"], time.time()) if report["tracking"]["exists"] else None
    )

    if args.json:
        _out(json.dumps(report, ensure_ascii=False))
        return EXIT_OK

    labels = {
        "requests": "requests waiting",
        "tracking": "operations in flight",
        "events": "events waiting",
        "poison": "poison messages",
        "outbox": "events for Event Grid",
        "deadletter": "refused by Event Grid",
    }
    _out(f"queue service: {report['queueService']}")
    for role, label in labels.items():
        entry = report[role]
        where = entry["queue"] if entry["exists"] else f"{entry['queue']}, does not exist yet"
        _out(f"{label + ':':<22}{entry['approximateMessageCount']:>6}  ({where})")
        if role == "tracking" and entry["exists"]:
            _out(f"  {_oldest_text(entry['oldestVisible'])}")
    _out("counts are approximate and include invisible messages")
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
