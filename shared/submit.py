"""The submit step: one deletion request from the requests queue to ARM, then to tracking and events."""

from __future__ import annotations

import time
from collections.abc import Callable

from . import arm_client as arm
from .arm_client import ArmAnswer, ArmClient, app_error
from .events import ACCEPTED, FAILED, SUCCEEDED, EventWriter, outcome_event
from .logs import get_logger, request_scope
from .request import DeletionRequest, InvalidRequest, decode_request
from .retry import SUBMIT_RETRY, RetryPolicy
from .tracking import Operation, TrackingStore, visibility_delay

logger = get_logger(__name__)

DEFAULT_RETRY_AFTER = 60  # seconds, when ARM sends no Retry-After


class SubmitDeferred(Exception):
    """ARM kept failing transiently; the request message goes back to the queue for a later delivery."""


def retries_exhausted(last_error: dict | None, tries: str) -> dict:
    error = app_error("RetriesExhausted", f"transient failures did not stop within the retry budget ({tries})")
    if last_error:
        error["message"] += f"; last error: {last_error.get('code')}: {last_error.get('message')}"
        error["details"] = [last_error]
    return error


class Submitter:
    def __init__(
        self,
        arm_client: ArmClient,
        tracking: TrackingStore,
        events: EventWriter,
        max_deliveries: int,
        retry: RetryPolicy = SUBMIT_RETRY,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._arm = arm_client
        self._tracking = tracking
        self._events = events
        self._max_deliveries = max_deliveries
        self._retry = retry
        self._clock = clock
        self._sleep = sleep

    def handle(self, body: bytes | str, message_id: str, dequeue_count: int) -> str:
        """Process one request message; returns the outcome's name, or raises SubmitDeferred."""
        try:
            request = decode_request(body, message_id)
        except InvalidRequest as invalid:
            with request_scope(invalid.fields.get("requestId"), invalid.fields.get("correlationId")):
                logger.warning("invalid request: %s", invalid.message)
                error = app_error("InvalidRequest", invalid.message, invalid.target)
                self._events.write(outcome_event(FAILED, invalid.fields, self._clock(), error))
            return "invalid"
        with request_scope(request.request_id, request.correlation_id):
            return self._submit(request, dequeue_count)

    def _submit(self, request: DeletionRequest, dequeue_count: int) -> str:
        answer = self._delete_checkpoint(request)
        now = self._clock()
        facts = _request_facts(request)
        if answer.state == arm.ACCEPTED:
            return self._accepted(request, answer, now)
        if answer.state == arm.SUCCEEDED:
            self._events.write(
                outcome_event(SUCCEEDED, {**facts, "submittedAt": now, "completedAt": now, "pollCount": 0}, now)
            )
            return "succeeded"
        if answer.state == arm.FAILED:
            self._events.write(outcome_event(FAILED, {**facts, "completedAt": now}, now, answer.error))
            return "failed"
        if dequeue_count < self._max_deliveries:
            logger.warning(
                "delivery %d of %d ends in a transient failure (%s); the queue will redeliver it",
                dequeue_count,
                self._max_deliveries,
                (answer.error or {}).get("code"),
            )
            raise SubmitDeferred(f"requestId={request.request_id}: {answer.error}")
        tries = f"{self._retry.attempts} tries in each of {self._max_deliveries} deliveries"
        self._events.write(
            outcome_event(FAILED, {**facts, "completedAt": now}, now, retries_exhausted(answer.error, tries))
        )
        return "retries-exhausted"

    def _delete_checkpoint(self, request: DeletionRequest) -> ArmAnswer:
        answer = self._arm.delete_checkpoint(request)
        for attempt in range(1, self._retry.attempts):
            if answer.state != arm.TRANSIENT:
                break
            if answer.retry_after is not None and answer.retry_after > self._retry.max_delay:
                break  # ARM asks for a longer pause than a delivery should hold a worker
            wait = self._retry.delay(attempt, answer.retry_after)
            logger.info(
                "transient failure %s, try %d again in %.1f s", (answer.error or {}).get("code"), attempt + 1, wait
            )
            self._sleep(wait)
            answer = self._arm.delete_checkpoint(request)
        return answer

    def _accepted(self, request: DeletionRequest, answer: ArmAnswer, now: float) -> str:
        operation = Operation.accepted(request, answer.location, answer.async_url, now)
        untrusted = [url for url in (answer.location, answer.async_url) if url and not self._arm.is_trusted(url)]
        if untrusted:
            # ARM has accepted the deletion, but its status URL may not be sent a token.
            self._events.write(outcome_event(ACCEPTED, operation.facts(), now))
            error = app_error("UntrustedOperationUrl", f"status URL is outside ARM_ENDPOINT: {untrusted[0]}")
            self._events.write(outcome_event(FAILED, {**operation.facts(), "completedAt": now}, now, error))
            return "untrusted-operation-url"
        self._tracking.add(operation, visibility_delay(answer.retry_after, DEFAULT_RETRY_AFTER))
        self._events.write(outcome_event(ACCEPTED, operation.facts(), now))
        return "accepted"


def _request_facts(request: DeletionRequest) -> dict:
    return {
        "requestId": request.request_id,
        "correlationId": request.correlation_id,
        "resourceUri": request.resource_uri,
        "checkpointId": request.checkpoint_id,
        "traceparent": request.traceparent,
    }


class PoisonHandler:
    """Turns a request message that landed in the poison queue into a Failed/RetriesExhausted event."""

    def __init__(self, events: EventWriter, clock: Callable[[], float] = time.time):
        self._events = events
        self._clock = clock

    def handle(self, body: bytes | str, message_id: str) -> None:
        try:
            facts = _request_facts(decode_request(body, message_id))
        except InvalidRequest as invalid:
            facts = invalid.fields
        now = self._clock()
        error = app_error(
            "RetriesExhausted", "the request message was moved to the poison queue after its last delivery failed"
        )
        with request_scope(facts.get("requestId"), facts.get("correlationId")):
            logger.error("the request landed in the poison queue (message %s)", message_id)
            self._events.write(outcome_event(FAILED, {**facts, "completedAt": now}, now, error))
