"""The poll step: due operations from the tracking queue, their status URLs, and the outcome events."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from . import arm_client as arm
from .arm_client import ArmAnswer, ArmClient, app_error
from .events import FAILED, SUCCEEDED, EventWriter, outcome_event
from .logs import get_logger, request_scope
from .retry import POLL_RETRY, RetryPolicy
from .submit import DEFAULT_RETRY_AFTER, retries_exhausted
from .tracking import Operation, TrackingStore, visibility_delay

logger = get_logger(__name__)

BATCH_SIZE = 32
LEASE_SECONDS = 120  # how long a taken operation stays hidden from other runs
MIN_RECHECK_SECONDS = 1  # a status URL is never read twice within a second, whatever Retry-After says


class Poller:
    def __init__(
        self,
        arm_client: ArmClient,
        tracking: TrackingStore,
        events: EventWriter,
        operation_timeout_seconds: int,
        retry: RetryPolicy = POLL_RETRY,
        concurrency: int = 16,
        clock: Callable[[], float] = time.time,
    ):
        self._arm = arm_client
        self._tracking = tracking
        self._events = events
        self._timeout = operation_timeout_seconds
        self._retry = retry
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="poll")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def run(
        self, budget_seconds: float, reserve_seconds: float = 70.0, thread_init: Callable[[], None] | None = None
    ) -> Counter:
        """Poll due operations until none is due or the budget (minus its reserve) is spent.

        No new batch is taken in the last `reserve_seconds`, so that the status GETs already
        sent (each bounded by the ARM client's timeout) end within the budget. `thread_init` runs in
        each worker thread before it polls (the host uses it to tie log lines to the invocation).

        Returns how many operations ended in each way ("running", "succeeded", ...).
        """
        started = time.monotonic()
        outcomes: Counter = Counter()
        while time.monotonic() - started < max(budget_seconds - reserve_seconds, 0.0):
            batch = list(self._tracking.receive_due(BATCH_SIZE, LEASE_SECONDS))
            if not batch:
                break
            for outcome in self._pool.map(lambda item: self._poll_in_worker(item, thread_init), batch):
                outcomes[outcome] += 1
        if outcomes:
            logger.info("poll run: %s in %.1f s", dict(outcomes), time.monotonic() - started)
        return outcomes

    def _poll_in_worker(self, item, thread_init: Callable[[], None] | None) -> str:
        if thread_init is not None:
            thread_init()
        return self._poll_one_safely(item)

    def _poll_one_safely(self, item) -> str:
        message, operation = item
        if operation is None:
            self._tracking.remove(message)
            return "discarded"
        try:
            with request_scope(operation.requestId, operation.correlationId):
                return self._poll_one(message, operation)
        except Exception:  # the message reappears after its lease and is polled again
            logger.exception("requestId=%s: polling failed; retried after the lease", operation.requestId)
            return "error"

    def _poll_one(self, message, operation: Operation) -> str:
        if self._clock() - operation.submittedAt >= self._timeout:
            error = app_error(
                "OperationTimedOut", f"the operation was still running {self._timeout} s after submission"
            )
            return self._finish(message, operation, FAILED, error)

        answer = self._arm.operation_status(
            operation.statusUrl, is_async=operation.isAsync, resource_uri=operation.resourceUri
        )
        if answer.status_code is not None:
            operation.pollCount += 1
        if answer.state == arm.RUNNING:
            return self._running(message, operation, answer)
        if answer.state == arm.SUCCEEDED:
            return self._finish(message, operation, SUCCEEDED)
        if answer.state == arm.FAILED:
            return self._finish(message, operation, FAILED, answer.error)

        operation.transientFailures += 1
        operation.lastError = answer.error
        if operation.transientFailures >= self._retry.attempts:
            tries = f"{operation.transientFailures} status reads in a row"
            return self._finish(message, operation, FAILED, retries_exhausted(answer.error, tries))
        delay = self._retry.delay(operation.transientFailures, answer.retry_after)
        self._tracking.reschedule(message, operation, visibility_delay(delay, DEFAULT_RETRY_AFTER, MIN_RECHECK_SECONDS))
        return "transient"

    def _running(self, message, operation: Operation, answer: ArmAnswer) -> str:
        if answer.location and not operation.isAsync:
            if not self._arm.is_trusted(answer.location):
                error = app_error("UntrustedOperationUrl", f"status URL is outside ARM_ENDPOINT: {answer.location}")
                return self._finish(message, operation, FAILED, error)
            operation.statusUrl = answer.location
        operation.transientFailures = 0
        operation.lastError = None
        self._tracking.reschedule(
            message, operation, visibility_delay(answer.retry_after, DEFAULT_RETRY_AFTER, MIN_RECHECK_SECONDS)
        )
        return "running"

    def _finish(self, message, operation: Operation, status: str, error: dict | None = None) -> str:
        now = self._clock()
        # The event first: a crash before the delete repeats the event (same id) and loses nothing.
        self._events.write(outcome_event(status, {**operation.facts(), "completedAt": now}, now, error))
        self._tracking.remove(message)
        return status.lower()
