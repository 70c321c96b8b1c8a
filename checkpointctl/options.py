"""What every command shares on its command line: the help layout, value checks, the connection options
and the queue clients they lead to, and reading a file argument (`-` = stdin)."""

from __future__ import annotations

import argparse
import sys

from .connection import DEFAULT_RETRIES, Queues, Target, UsageError, resolve_target
from .console import EXIT_USAGE


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def whole_number(low: int, high: int):
    """An argparse type: a whole number from `low` to `high`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} must be between {low} and {high}")
        return value

    return parse


def identifier(what: str):
    """An argparse type: an id of 1 to 256 printable characters (as the app takes requestIds)."""

    def parse(text: str) -> str:
        if not 1 <= len(text) <= 256 or not text.isprintable():
            raise argparse.ArgumentTypeError(f"{text!r} is not a {what} (1 to 256 printable characters)")
        return text

    return parse


def add_connection_options(parser: argparse.ArgumentParser) -> None:
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
        type=whole_number(0, 10),
        default=DEFAULT_RETRIES,
        metavar="N",
        help=f"retries of a failed call to the queue service, about 1 s, 3 s, 5 s apart (default {DEFAULT_RETRIES})",
    )
    group.add_argument("--verbose", "-v", action="store_true", help="log the SDK's requests to stderr")


def target(args: argparse.Namespace) -> Target:
    return resolve_target(
        connection_string=args.connection_string,
        account_url=args.account_url,
        queue_names={
            "requests_queue": args.requests_queue,
            "tracking_queue": args.tracking_queue,
            "events_queue": args.events_queue,
        },
    )


_OPENED: list[Queues] = []


def open_queues(args: argparse.Namespace, where: Target) -> Queues:
    queues = Queues(where.storage, args.retries)
    _OPENED.append(queues)  # closed (its credential) when the command ends
    return queues


def close_opened() -> None:
    for opened in _OPENED:
        opened.close()
    _OPENED.clear()


def read_source(path: str, flag: str) -> list:
    """The lines of file `path` (bytes), or of stdin for `-`."""
    if path == "-":
        stream = getattr(sys.stdin, "buffer", sys.stdin)
        return stream.readlines()
    try:
        with open(path, "rb") as f:
            return f.readlines()
    except OSError as exc:
        raise UsageError(f"{flag} {path}: {exc.strerror or exc}") from None


class CommandParser(argparse.ArgumentParser):
    """The parser of a command. A command with actions may have one that runs when none is named
    (`failed` is `failed list`): the options of that action may then follow the command's name."""

    default_action: str | None = None

    def parse_known_args(self, args=None, namespace=None):
        if self.default_action is not None and args is not None:
            args = list(args)
            if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help")):
                args.insert(0, self.default_action)
        return super().parse_known_args(args, namespace)


def add_command(
    commands,
    name: str,
    *,
    help: str,
    description: str,
    epilog: str | None = None,
    aliases: tuple[str, ...] = (),
):
    """A (sub)command's parser, laid out like every other; `aliases` are other names for it."""
    return commands.add_parser(
        name, aliases=list(aliases), formatter_class=Formatter, help=help, description=description, epilog=epilog
    )


def add_group(
    commands,
    name: str,
    *,
    help: str,
    description: str,
    epilog: str | None = None,
    default_action: str | None = None,
):
    """A command with actions of its own (`checkpointctl NAME <action>`); the subparsers to add them to.
    Without an action it runs `default_action`, or without one prints its help and exits 2."""
    group = add_command(commands, name, help=help, description=description, epilog=epilog)
    group.default_action = default_action  # a CommandParser: the top-level subparsers make them

    def usage(args: argparse.Namespace) -> int:
        group.print_help(sys.stderr)
        return EXIT_USAGE

    group.set_defaults(run=usage)
    return group.add_subparsers(dest="action", metavar="<action>")
