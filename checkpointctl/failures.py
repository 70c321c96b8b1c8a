"""What `failed list` and `failed resubmit` share: where they find `Failed` events, and the request a
`Failed` event was about, rebuilt as a new try.

Events (contract section 4) are read one of three ways: a peek at the events queue (the default: its
first 32 visible messages), a scan of the whole queue (`--scan`: received page by page, each hidden for
at most a minute while it is read, then made visible again; never deleted), or a saved `watch --json`
output (`--events-file F`). The rebuilt request carries the event's resourceUri, checkpointId,
correlationId and traceparent with a new requestId: the contract allows one terminal event per
requestId, and the first try had its own already.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Iterator

from shared.errors import ErrorCode
from shared.events import EventStatus

from .events import Event, parse_event, printable
from .messages import Prepared, Problem, prepare
from .options import open_queues, read_source, target
from .queueops import PEEK_LIMIT, Scan, peek

INVALID_REQUEST = str(ErrorCode.INVALID_REQUEST)
WOULD_FAIL_AGAIN = "sent again it would fail again; correct the request and send it with `checkpointctl enqueue`"
CONSUMED_HINT = (
    "an event that a consumer took (watch, a Logic App) is gone from the queue: "
    "--events-file reads a saved `watch --json` output"
)


def add_source_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--scan",
        action="store_true",
        help="look through the whole events queue: events are received, hidden for at most a minute while "
        "they are read, and made visible again (never deleted)",
    )
    source.add_argument(
        "--events-file",
        metavar="F",
        help="read the events from F (`watch --json` output, one event a line; - reads stdin), not the queue",
    )


class Source:
    """The events `args` point at (--events-file, --scan, else a peek), read once:
    `with Source(args) as source: for event in source.events(): ...`. What a scan received is made
    visible again when the block ends, however it ends."""

    def __init__(self, args: argparse.Namespace):
        self._args = args
        self._scan: Scan | None = None
        self.read = 0  # events read, Failed or not
        self.missing = False  # the events queue does not exist
        self.queue: str | None = None

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._scan is not None:
            self._scan.release()

    @property
    def kind(self) -> str:
        return "file" if self._args.events_file is not None else "scan" if self._args.scan else "peek"

    def events(self) -> Iterator[Event]:
        for message_id, content in self._messages():
            self.read += 1
            yield parse_event(message_id, content)

    def _messages(self) -> Iterator[tuple[str, object]]:
        if self.kind == "file":
            for number, line in enumerate(read_source(self._args.events_file, "--events-file"), start=1):
                if isinstance(line, bytes):
                    line = line.decode("utf-8-sig", errors="replace")
                if line.strip():
                    yield f"line {number}", line.strip()
            return
        where = target(self._args)
        self.queue = where.events_queue
        client = open_queues(self._args, where).client(where.events_queue)
        peeked = peek(client)  # also tells whether the queue exists, which a scan would not
        if peeked is None:
            self.missing = True
        elif self.kind == "peek":
            yield from ((message.id, message.content) for message in peeked)
        else:
            self._scan = Scan(client)
            for page in self._scan.pages():
                yield from ((message.id, message.content) for message in page)

    def described(self) -> str:
        """Where the events were read, for what is said about them."""
        if self.kind == "file":
            return f"in {printable(self._args.events_file)}"
        if self.kind == "scan":
            return f"on {self.queue}"
        return (
            f"among the first {self.read} visible event(s) of {self.queue} (a peek sees at most {PEEK_LIMIT}; "
            "--scan looks through the whole queue)"
        )


def is_failed(event: Event) -> bool:
    """A deletion's `Failed` event. A policy's `ScVmm.CheckpointPolicy.Failed` is not one: it names no
    checkpoint to delete again (its own deletions that failed have deletion `Failed` events of their own)."""
    return event.is_deletion and event.status == EventStatus.FAILED


def error_of(event: Event) -> dict:
    """The `Failed` event's `data.error` ({} when it has none)."""
    failure = event.data.get("error")
    return failure if isinstance(failure, dict) else {}


def error_code(event: Event) -> str | None:
    code = error_of(event).get("code")
    return code if isinstance(code, str) else None


def rebuild(event: Event) -> tuple[Prepared | None, Problem | None, list[str]]:
    """The request of a `Failed` event as a new try, validated with the app's rules (`messages.prepare`):
    its resourceUri, checkpointId, correlationId and traceparent, and a new requestId."""
    data = event.data
    request = {"resourceUri": data.get("resourceUri")}
    request["requestId"] = str(uuid.uuid4())  # one terminal event per requestId: a new try is a new request
    for field in ("checkpointId", "correlationId"):
        if data.get(field) is not None:
            request[field] = data[field]
    if event.document.get("traceparent") is not None:
        request["traceparent"] = event.document["traceparent"]
    return prepare(request, where=f"the Failed event of {printable(event.request_id or event.message_id)}")
