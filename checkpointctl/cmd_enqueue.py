"""`checkpointctl enqueue`: validate deletion requests (single deletions and retention policies) with the
app's own rules, then send them."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from azure.core.exceptions import AzureError

from .connection import UsageError, ensure_queue
from .console import EXIT_FAILED, EXIT_OK, EXIT_USAGE, describe_service_error, error, note, out
from .messages import (
    ENCODINGS,
    ENVELOPES,
    FLAG_FOR_FIELD,
    POLICY_FLAG_FOR_FIELD,
    Prepared,
    Problem,
    prepare,
    read_json_lines,
)
from .options import add_command, add_connection_options, open_queues, read_source, target

MAX_PROBLEMS_SHOWN = 20

EXAMPLES = """\
examples:
  # one request, against a local Azurite
  python -m checkpointctl enqueue --connection-string UseDevelopmentStorage=true \\
      --resource-uri /subscriptions/<sub>/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/vm1 \\
      --checkpoint-id cp-123 --correlation-id change-42

  # many requests, one JSON object per line, as CloudEvents in base64, ids kept for `watch`
  python -m checkpointctl enqueue --file requests.jsonl --envelope cloudevents --encoding base64 > sent.txt

  # a retention policy: delete all but the newest 3 nightly-* checkpoints of the machine
  python -m checkpointctl enqueue --resource-uri /subscriptions/<sub>/.../machines/vm1 \
      --keep-latest 3 --name-pattern 'nightly-*' --request-id policy-7

  # the same as a policy dry run: the app deletes nothing and lists what it would delete in its
  # ScVmm.CheckpointPolicy.Completed event (`checkpointctl checkpoints` shows it without the app)
  python -m checkpointctl enqueue --resource-uri /subscriptions/<sub>/.../machines/vm1 \
      --keep-latest 3 --name-pattern 'nightly-*' --dry-run

  # from stdin, validated only (nothing sent)
  cat requests.jsonl | python -m checkpointctl enqueue --file - --validate-only

Every request is validated with the app's own rules (shared.request.decode_request, and
shared.policy.parse_policy for policies) before anything is sent; one invalid request means nothing
is sent (exit 2). A request without requestId is given a new UUID. The requestIds sent are printed
one per line (--json: one JSON object per line).

--dry-run and --validate-only: with --keep-latest or --name-pattern, --dry-run is the policy's
"dryRun": true, sent to the app. --validate-only sends nothing, for any request. --dry-run without a
policy flag is the old spelling of --validate-only (deprecated; it says so on stderr).
"""

DEPRECATED_DRY_RUN = (
    "--dry-run without --keep-latest or --name-pattern is the old spelling of --validate-only (validate "
    "and print, send nothing); use --validate-only: --dry-run is the policy's dryRun"
)


def add_parser(commands) -> None:
    enqueue = add_command(
        commands,
        "enqueue",
        help="send deletion requests to the requests queue",
        description="Send deletion requests to the requests queue.",
        epilog=EXAMPLES,
    )
    one = enqueue.add_argument_group("one request from flags")
    one.add_argument("--resource-uri", metavar="ID", help="ARM resource id of the machine (required without --file)")
    one.add_argument("--checkpoint-id", metavar="ID", help="checkpoint to delete (omitted: the request body is {})")
    one.add_argument("--request-id", metavar="ID", help="default: a new UUID, printed")
    one.add_argument("--correlation-id", metavar="ID", help="echoed into every event")
    one.add_argument("--traceparent", metavar="TP", help="W3C traceparent carried into every event")
    policy = enqueue.add_argument_group("a retention policy from flags, instead of --checkpoint-id (docs/policies.md)")
    policy.add_argument(
        "--keep-latest",
        type=keep_latest_number,
        metavar="K",
        help="delete all but the newest K checkpoints (of those --name-pattern matches), 0 to 1000",
    )
    policy.add_argument(
        "--name-pattern", metavar="P", help="delete only checkpoints whose name matches this glob (case-insensitive)"
    )
    policy.add_argument(
        "--dry-run",
        action="store_true",
        help='with a policy flag: the request\'s "dryRun": true, the app deletes nothing and reports what it '
        "would delete; without one: deprecated, = --validate-only",
    )
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
    enqueue.add_argument(
        "--validate-only", action="store_true", help="validate and print the messages; send nothing, need no connection"
    )
    add_connection_options(enqueue)
    enqueue.set_defaults(run=run)


def keep_latest_number(text: str) -> int:
    """--keep-latest: any whole number here; its range is the app's rule, checked with the request."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def run(args: argparse.Namespace) -> int:
    flag_values = {field: getattr(args, flag[2:].replace("-", "_")) for field, flag in FLAG_FOR_FIELD.items()}
    rules = {"keepLatest": args.keep_latest, "namePattern": args.name_pattern}
    policy_flags = [POLICY_FLAG_FOR_FIELD[f"policy.{rule}"] for rule, value in rules.items() if value is not None]
    validate_only = args.validate_only
    if args.dry_run and not policy_flags:
        note(f"warning: {DEPRECATED_DRY_RUN}")
        validate_only = True
    now = datetime.now(UTC)
    shape = {"envelope": args.envelope, "encoding": args.encoding, "now": now}
    prepared: list[Prepared] = []
    problems: list[Problem] = []
    warnings: list[str] = []

    if args.file is not None:
        given = [FLAG_FOR_FIELD[field] for field, value in flag_values.items() if value is not None] + policy_flags
        if given:
            raise UsageError(f"--file cannot be combined with {', '.join(given)}; put those fields in the file")
        for number, parsed in read_json_lines(read_source(args.file, "--file")):
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
        if policy_flags and flag_values["checkpointId"] is not None:
            raise UsageError(
                f"--checkpoint-id names one checkpoint to delete, {' and '.join(policy_flags)} a retention policy: "
                "give one or the other"
            )
        request = {field: value for field, value in flag_values.items() if value is not None}
        if policy_flags:
            request["policy"] = {rule: value for rule, value in rules.items() if value is not None}
            if args.dry_run:
                request["dryRun"] = True
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
        note(f"warning: {warning}")
    if problems:
        problems.sort(key=lambda p: int(p.where.split()[1]) if p.where.startswith("line ") else 0)
        for problem in problems[:MAX_PROBLEMS_SHOWN]:
            error(f"invalid request: {problem}")
        if len(problems) > MAX_PROBLEMS_SHOWN:
            error(f"... and {len(problems) - MAX_PROBLEMS_SHOWN} more invalid requests")
        error("nothing was sent")
        return EXIT_USAGE

    return deliver(args, prepared, send=not validate_only, unsent="validate only")


def deliver(
    args: argparse.Namespace,
    prepared: list[Prepared],
    origins: dict[str, str] | None = None,
    *,
    send: bool,
    unsent: str = "dry run",
) -> int:
    """Send validated requests in order and print each requestId (or, with --json, a record) once sent;
    without `send` print the messages instead and send nothing (`unsent` names why, on stderr). `origins`
    maps a requestId sent to the one it tries again (the --json record's `fromRequestId`)."""
    if not send:
        for item in prepared:
            out(item.text)
        note(f"{unsent}: {len(prepared)} valid request(s); nothing was sent")
        return EXIT_OK

    where = target(args)
    client = open_queues(args, where).client(where.requests_queue)
    ensure_queue(client)
    for sent, item in enumerate(prepared):
        try:
            message = client.send_message(item.text)
        except AzureError as exc:
            error(describe_service_error(exc))
            error(
                f"sent {sent} of {len(prepared)} request(s); {item.where} and the ones after it were not sent"
                if len(prepared) > 1
                else "the request was not sent"
            )
            return EXIT_FAILED
        if args.json:
            record = {"requestId": item.request_id, "messageId": message.id, "queue": where.requests_queue}
            if item.line is not None:
                record["line"] = item.line
            if origins and item.request_id in origins:
                record["fromRequestId"] = origins[item.request_id]
            out(json.dumps(record, ensure_ascii=False))
        else:
            out(item.request_id)
    return EXIT_OK
