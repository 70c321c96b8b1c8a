"""What the commands print: results on stdout, notes and errors on stderr, the exit codes."""

from __future__ import annotations

import sys

from azure.core.exceptions import AzureError, ClientAuthenticationError, ServiceRequestError, ServiceResponseError

PROG = "checkpointctl"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def error(message: str) -> None:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    sys.stderr.flush()


def note(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


def say(line: str) -> None:
    """A line for the person at the terminal, on stderr without the prefix (what --resubmit lists and asks)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def describe_service_error(exc: AzureError) -> str:
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
