"""Optional copy of every event to an Event Grid custom topic (CloudEvents schema, managed identity).

The queue copy is written first and is never skipped. An event the topic does not take waits in
an outbox queue (`<events queue>-outbox`) and is published again by each poll run, with backoff,
until it goes through or its retry budget is spent (then it is logged and dropped: the queue
copy still holds it).
"""

from __future__ import annotations

import json
from collections import Counter

from azure.core.exceptions import AzureError

from .logs import get_logger, request_scope
from .retry import RetryPolicy

logger = get_logger(__name__)

PUBLISH_RETRY = RetryPolicy(attempts=30, base_delay=10.0, max_delay=600.0)  # about 4 hours of tries
OUTBOX_BATCH = 32
OUTBOX_LEASE_SECONDS = 60


class EventGridForwarder:
    def __init__(self, publisher, outbox_queue, retry: RetryPolicy = PUBLISH_RETRY):
        self._publisher = publisher  # an azure.eventgrid.EventGridPublisherClient
        self._outbox = outbox_queue
        self._retry = retry

    def publish(self, event: dict) -> bool:
        """Send one event to the topic; on failure it goes to the outbox. True when the topic took it."""
        try:
            self._publisher.send([event], retry_total=0)  # the outbox is the retry
            return True
        except AzureError as exc:
            logger.warning(
                "Event Grid did not take event %s (%s); kept in the outbox",
                event["id"],
                type(exc).__name__,
            )
            self._outbox.send_message(
                _outbox_record(event, 1), visibility_timeout=int(self._retry.delay(1)), time_to_live=-1
            )
            return False

    def retry_pending(self, max_batches: int = 10) -> Counter:
        """Publish what waits in the outbox, a batch per call to the topic."""
        outcomes: Counter = Counter()
        for _ in range(max_batches):
            messages = list(
                self._outbox.receive_messages(
                    messages_per_page=OUTBOX_BATCH, max_messages=OUTBOX_BATCH, visibility_timeout=OUTBOX_LEASE_SECONDS
                )
            )
            if not messages:
                break
            records = [json.loads(m.content) for m in messages]
            try:
                self._publisher.send([r["event"] for r in records], retry_total=0)
            except AzureError as exc:
                logger.warning("Event Grid did not take %d waiting event(s): %s", len(records), type(exc).__name__)
                for message, record in zip(messages, records, strict=True):
                    outcomes[self._later(message, record)] += 1
                break
            for message in messages:
                self._outbox.delete_message(message)
            outcomes["published"] += len(messages)
        if outcomes:
            logger.info("Event Grid outbox: %s", dict(outcomes))
        return outcomes

    def _later(self, message, record: dict) -> str:
        attempts = record["attempts"] + 1
        event = record["event"]
        if attempts > self._retry.attempts:
            with request_scope(event["data"].get("requestId"), event["data"].get("correlationId")):
                logger.error(
                    "event %s was not published to Event Grid after %d tries; it stays on the events queue only",
                    event["id"],
                    attempts - 1,
                )
            self._outbox.delete_message(message)
            return "dropped"
        delay = int(self._retry.delay(attempts))
        self._outbox.update_message(message, content=_outbox_record(event, attempts), visibility_timeout=delay)
        return "waiting"


def _outbox_record(event: dict, attempts: int) -> str:
    return json.dumps({"attempts": attempts, "event": event}, separators=(",", ":"))
