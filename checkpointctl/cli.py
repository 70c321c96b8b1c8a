"""The command line: the top-level parser, and running one command with its errors turned into exit codes.

Each command lives in its own module (cmd_*.py) with its parser and what it runs. Exit codes: 0 success;
1 a request failed (watch), something named was not found, or the queue service (checkpoints: ARM) could
not be read; 2 bad usage (argparse errors, invalid requests, missing or malformed settings).
"""

from __future__ import annotations

import argparse
import logging
import sys

from azure.core.exceptions import AzureError

from . import cmd_checkpoints, cmd_enqueue, cmd_failed, cmd_poison, cmd_status, cmd_watch
from .connection import UsageError
from .console import EXIT_FAILED, EXIT_OK, EXIT_USAGE, PROG, describe_service_error, error, note
from .options import CommandParser, Formatter, close_opened

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
        error(str(exc))
        return EXIT_USAGE
    except AzureError as exc:
        error(describe_service_error(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:  # enqueue has printed the requestIds it sent before the interruption
        note("interrupted")
        return EXIT_FAILED
    except BrokenPipeError:
        return EXIT_FAILED
    finally:
        close_opened()


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
        formatter_class=Formatter,
        description="Send checkpoint-deletion requests and retention policies to the function app, follow its "
        "outcome events, look at its queues, and list a VM's checkpoints (read from ARM).",
        epilog="exit codes: 0 success, 1 a request failed, what was named was not found, or the queue service "
        "(checkpoints: ARM) could not be read, 2 bad usage\n"
        "run `python -m checkpointctl <command> --help` for a command's options and examples; see docs/cli.md",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="<command>", parser_class=CommandParser)
    for command in (cmd_enqueue, cmd_watch, cmd_status, cmd_poison, cmd_failed, cmd_checkpoints):
        command.add_parser(commands)
    return parser
