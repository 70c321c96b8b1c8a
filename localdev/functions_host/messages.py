"""Queue messages as the queue extension handles them: the text encoding of host.json's
``messageEncoding`` (:class:`MessageCodec`), the trigger metadata the worker hands over, and the
lease that keeps a message invisible while its function runs (:class:`Lease`)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import re
import threading
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.functions import meta
from azure.storage.queue import QueueClient

log = logging.getLogger(__package__)


class MessageCodec:
    """Message text to bytes and back for ``messageEncoding`` ``"base64"`` or ``"none"``."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding

    def decode(self, text: str | None) -> bytes:
        """The bytes a message's text stands for; ValueError if it is not valid base64."""
        text = text or ""
        if self.encoding == "none":
            return text.encode("utf-8")
        compact = re.sub(r"[ \t\r\n]", "", text)  # .NET's Convert.FromBase64String skips whitespace
        try:
            return base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(str(exc)) from None

    def encode(self, value: str | bytes) -> str:
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if self.encoding == "none":
            return data.decode("utf-8")
        return base64.b64encode(data).decode("ascii")


def queue_trigger_metadata(message: Any, queue_name: str) -> dict[str, meta.Datum]:
    """The trigger metadata the worker hands a queue function (id, dequeue count, times, text)."""

    def when(value: dt.datetime | None) -> meta.Datum | None:
        if value is None:
            return None
        return meta.Datum(value.astimezone(dt.UTC).replace(microsecond=0).isoformat(), "string")

    metadata = {
        "Id": meta.Datum(message.id, "string"),
        "DequeueCount": meta.Datum(str(message.dequeue_count), "json"),
        "ExpirationTime": when(message.expires_on),
        "InsertionTime": when(message.inserted_on),
        "NextVisibleTime": when(message.next_visible_on),
        "PopReceipt": meta.Datum(message.pop_receipt, "string"),
        "QueueTrigger": meta.Datum(message.content, "string"),
    }
    return {k: v for k, v in metadata.items() if v is not None}


class Lease:
    """Keeps a message invisible while its function runs: renews at half the visibility timeout
    (the host's UpdateQueueMessageVisibilityCommand) and tracks the newest pop receipt."""

    def __init__(self, queue: QueueClient, message: Any, visibility: float) -> None:
        self.queue = queue
        self.message_id = message.id
        self.pop_receipt: str = message.pop_receipt
        self.visibility = max(1, int(round(visibility)))
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Lease:
        self._thread = threading.Thread(target=self._renew, name=f"lease-{self.message_id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _renew(self) -> None:
        while not self._done.wait(self.visibility / 2):
            try:
                receipt = self.queue.update_message(
                    self.message_id, pop_receipt=self.pop_receipt, visibility_timeout=self.visibility
                )
                self.pop_receipt = receipt["pop_receipt"]
                log.debug("Renewed visibility of message %s for %ds", self.message_id, self.visibility)
            except (ResourceNotFoundError, HttpResponseError) as exc:
                log.warning("Could not renew visibility of message %s: %s", self.message_id, exc)
                return
