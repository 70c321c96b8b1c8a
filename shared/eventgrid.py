"""Forwarding events from the outbox queue to an Event Grid custom topic (CloudEvents, managed identity).

The events queue copy is written first and is never skipped; with a topic set, each event is
also put in the outbox (`<events queue>-outbox`), and each poll run forwards what waits there,
within its own time budget. A batch the topic refuses is sent again one event at a time, so one
bad event never takes good ones with it. An event refused for good (400/413), or still not taken
after the retry budget, goes to the dead-letter queue (`<events queue>-deadletter`) with the reason.
"""

from __future__ import annotations

import json
from collections import Counter

from azure.core.exceptions import HttpResponseError

from .budgets import EVENTGRID_TIMEOUT, Deadline
from .cleaning import clean_text
from .events import outbox_record
from .logs import get_logger, request_scope
from .retry import RetryPolicy

logger = get_logger(__name__)

PUBLISH_RETRY = RetryPolicy(attempts=30, base_delay=10.0, max_delay=600.0)  # about 4 hours of tries
OUTBOX_BATCH = 32
OUTBOX_LEASE_SECONDS = 60
REFUSED_FOR_GOOD = (400, 413)  # the topic will never take this event


class EventGridForwarder:
    def __init__(
        self,
        publisher,
        outbox_queue,
        deadletter_queue,
        retry: RetryPolicy = PUBLISH_RETRY,
        timeout: tuple[float, float] = EVENTGRID_TIMEOUT,
    ):
        self._publisher = publisher  # an azure.eventgrid.EventGridPublisherClient, built with retries off
        self._outbox = outbox_queue
        self._deadletter = deadletter_queue
        self._retry = retry
        self._timeout = timeout

    def forward(self, deadline: Deadline) -> Counter:
        """Publish what waits in the outbox, a batch per call to the topic, until it is empty,
        the topic fails, or the deadline comes."""
        outcomes: Counter = Counter()
        while deadline.remaining() > 0:
            messages = list(
                self._outbox.receive_messages(
                    messages_per_page=OUTBOX_BATCH, max_messages=OUTBOX_BATCH, visibility_timeout=OUTBOX_LEASE_SECONDS
                )
            )
            if not messages:
                break
            records = []
            for message in messages:
                record = _read_record(message.content)
                if record is None:
                    self._dead(message, {"unreadable": message.content[:1024]}, "not an outbox record")
                    outcomes["dead-lettered"] += 1
                else:
                    records.append((message, record))
            if records and not self._publish_batch(records, outcomes):
                break  # the topic is failing: the rest waits for a later run
        if outcomes:
            logger.info("Event Grid outbox: %s", dict(outcomes))
        return outcomes

    def _publish_batch(self, records: list, outcomes: Counter) -> bool:
        """False when the topic failed in a way that will not be better for the next batch."""
        problem = self._send([record["event"] for _, record in records])
        if problem is None:
            for message, _ in records:
                self._outbox.delete_message(message)
            outcomes["published"] += len(records)
            return True
        status, reason = problem
        if status not in REFUSED_FOR_GOOD:
            logger.warning("Event Grid did not take %d waiting event(s): %s", len(records), reason)
            for message, record in records:
                outcomes[self._later(message, record, reason)] += 1
            return False
        if len(records) == 1:
            message, record = records[0]
            self._dead(message, record["event"], reason)
            outcomes["dead-lettered"] += 1
            return True
        # one at a time, to find the event that spoiled the batch; the others go through
        return all(self._publish_batch([one], outcomes) for one in records)

    def _send(self, events: list[dict]) -> tuple[int | None, str] | None:
        try:
            # per call: the client ignores timeouts given when it is built
            self._publisher.send(events, connection_timeout=self._timeout[0], read_timeout=self._timeout[1])
            return None
        except HttpResponseError as exc:
            return exc.status_code, clean_text(f"HTTP {exc.status_code}: {exc.message}", 1024)
        except Exception as exc:  # a timeout, a dropped connection, no token: the topic is not reachable
            return None, clean_text(f"{type(exc).__name__}: {exc}", 1024)

    def _later(self, message, record: dict, reason: str) -> str:
        attempts = record["attempts"] + 1
        if attempts >= self._retry.attempts:
            self._dead(message, record["event"], f"not published after {attempts} tries; last: {reason}")
            return "dead-lettered"
        delay = int(self._retry.delay(attempts))
        self._outbox.update_message(message, content=outbox_record(record["event"], attempts), visibility_timeout=delay)
        return "waiting"

    def _dead(self, message, event: dict, reason: str) -> None:
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        with request_scope(data.get("requestId"), data.get("correlationId")):
            logger.error("event %s goes to the dead-letter queue: %s", event.get("id"), reason)
        record = json.dumps({"reason": reason, "event": event}, separators=(",", ":"), ensure_ascii=False)
        self._deadletter.send_message(record, time_to_live=-1)
        self._outbox.delete_message(message)


def _read_record(content) -> dict | None:
    try:
        record = json.loads(content)
    except (ValueError, TypeError, RecursionError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("event"), dict):
        return None
    if not isinstance(record.get("attempts"), int):
        return None
    return record
