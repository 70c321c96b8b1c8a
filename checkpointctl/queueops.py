"""Reading a queue without taking anything from anyone: peeks, and scans that hide what they receive
only while they look at it, then make it visible again."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from azure.core.exceptions import AzureError, ResourceNotFoundError

PEEK_LIMIT = 32  # the queue service returns at most 32 messages per peek or receive
SCAN_VISIBILITY_SECONDS = 60  # what a scan received stays hidden at most this long (if the run dies: then back)


def peek(client, limit: int = PEEK_LIMIT) -> list | None:
    """The first `limit` visible messages (never more than 32), untouched; None when the queue does not exist."""
    try:
        return list(client.peek_messages(max_messages=min(limit, PEEK_LIMIT)))
    except ResourceNotFoundError:
        return None


def delete_quietly(client, message) -> bool:
    """Delete a received message; False when it was gone already (someone else deleted it, or our receipt
    is stale because the message was received again after its visibility timeout)."""
    try:
        client.delete_message(message)
    except ResourceNotFoundError:
        return False
    return True


def release(client, messages) -> None:
    """Make received messages visible again at once, for whoever reads next."""
    for message in messages:
        with contextlib.suppress(AzureError):  # else they reappear by themselves when their visibility ends
            client.update_message(message, visibility_timeout=0)


class Scan:
    """Every message of a queue, page by page, by receiving: what was received stays hidden (so no page
    repeats) until `release()` makes it visible again. Messages taken out with `drop()` (deleted) are not
    released. A queue that does not exist is an empty one."""

    def __init__(self, client, visibility: int = SCAN_VISIBILITY_SECONDS):
        self._client = client
        self._visibility = visibility
        self._seen: set[str] = set()  # every message id received, so that none is yielded twice
        self._held: dict[str, object] = {}  # message id -> the newest received copy (its pop receipt)

    def pages(self) -> Iterator[list]:
        while True:
            try:
                received = list(
                    self._client.receive_messages(
                        messages_per_page=PEEK_LIMIT, max_messages=PEEK_LIMIT, visibility_timeout=self._visibility
                    )
                )
            except ResourceNotFoundError:
                return
            fresh = [m for m in received if m.id not in self._seen]
            self._seen.update(m.id for m in received)
            for message in received:
                self._held[message.id] = message
            if not fresh:  # empty, or only messages seen before whose visibility ran out during a long scan
                return
            yield fresh

    def drop(self, message) -> None:
        self._held.pop(message.id, None)

    def release(self) -> None:
        release(self._client, list(self._held.values()))
        self._held.clear()
