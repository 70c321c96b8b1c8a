"""The poll step: due operations from the tracking queue, their status URLs, and the outcome events.

Operations are polled concurrently as they come (a slow status read holds only its own worker),
each within a deadline that leaves time for its writes and ends before its lease does; the run
ends within its budget whatever hangs.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from . import arm_answers as arm
from .arm_answers import ArmAnswer, app_error
from .arm_client import ArmClient
from .budgets import DEFAULT_BUDGETS, Budgets, Deadline
from .cleaning import compact_error
from .events import FAILED, SUCCEEDED, EventWriter, outcome_event
from .logs import get_logger, request_scope
from .retry import POLL_RETRY, RetryPolicy
from .submit import DEFAULT_RETRY_AFTER, retries_exhausted
from .tracking import Operation, TrackingStore, visibility_delay
from .verification import ABSENT, PRESENT, UNREADABLE_NOW, verified_absent, verify

logger = get_logger(__name__)

BATCH_SIZE = 32
MIN_RECHECK_SECONDS = 1  # a status URL is never read twice within a second, whatever Retry-After says
MIN_ITEM_SECONDS = 5.0  # an operation is only taken with at least this long left for its ARM calls


class Poller:
    def __init__(
        self,
        arm_client: ArmClient,
        tracking: TrackingStore,
        events: EventWriter,
        operation_timeout_seconds: int,
        failure_window_seconds: int = 3600,
        retry: RetryPolicy = POLL_RETRY,
        budgets: Budgets = DEFAULT_BUDGETS,
        concurrency: int = 16,
        clock: Callable[[], float] = time.time,
    ):
        self._arm = arm_client
        self._tracking = tracking
        self._events = events
        self._timeout = operation_timeout_seconds
        self._window = failure_window_seconds
        self._retry = retry
        self._budgets = budgets
        self._concurrency = concurrency
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="poll")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def run(self, thread_init: Callable[[], None] | None = None) -> Counter:
        """Poll due operations until none is due or the run's budget is spent.

        `thread_init` runs in each worker thread before it polls (the host uses it to tie log lines
        to the invocation). Returns how many operations ended in each way ("running", "succeeded", ...).
        """
        started = time.monotonic()
        run = Deadline(self._budgets.poll_run)
        # ARM work of an operation ends early enough for its writes, within the run and its lease
        reserve = self._budgets.storage_reserve
        outcomes: Counter = Counter()
        in_flight: set = set()
        drained = False
        while True:
            if not drained and len(in_flight) < self._concurrency and run.remaining() > reserve + MIN_ITEM_SECONDS:
                wanted = min(BATCH_SIZE, 2 * self._concurrency - len(in_flight))
                item_deadline = run.min(Deadline(self._budgets.poll_lease)).earlier(reserve)
                batch = self._take(wanted)
                drained = len(batch) < wanted
                for item in batch:
                    in_flight.add(self._pool.submit(self._poll_in_worker, item, item_deadline, thread_init))
                continue
            if not in_flight:
                break
            done, in_flight = wait(in_flight, timeout=run.remaining(), return_when=FIRST_COMPLETED)
            for future in done:
                outcomes[future.result()] += 1
            if not done:
                logger.error("poll run: %d operation(s) still at work at the end of the budget", len(in_flight))
                outcomes["unfinished"] += len(in_flight)
                break
        if outcomes:
            logger.info("poll run: %s in %.1f s", dict(outcomes), time.monotonic() - started)
        return outcomes

    def _take(self, wanted: int) -> list:
        try:
            return list(self._tracking.receive_due(wanted, int(self._budgets.poll_lease)))
        except Exception:  # storage failing: what was taken is finished, the rest waits for a later run
            logger.exception("poll run: could not take due operations from the tracking queue")
            return []

    def _poll_in_worker(self, item, deadline: Deadline, thread_init: Callable[[], None] | None) -> str:
        if thread_init is not None:
            thread_init()
        message, operation = item
        if operation is None:
            self._tracking.remove(message)
            return "discarded"
        if deadline.remaining() < MIN_ITEM_SECONDS:
            return "deferred"  # waited too long for a worker: the message reappears after its lease
        try:
            with request_scope(operation.requestId, operation.correlationId):
                return self._poll_one(message, operation, deadline)
        except Exception:  # the message reappears after its lease and is polled again
            logger.exception("requestId=%s: polling failed; retried after the lease", operation.requestId)
            return "error"

    def _poll_one(self, message, operation: Operation, deadline: Deadline) -> str:
        if self._clock() - operation.submittedAt >= self._timeout:
            verdict = verify(self._arm, operation.resourceUri, operation.checkpointId, deadline)
            if verdict.state == ABSENT:
                return self._finish(message, operation, SUCCEEDED, verified=verified_absent(operation.statusReadError))
            error = app_error(
                "OperationTimedOut", f"the operation was still running {self._timeout} s after submission"
            )
            return self._finish(message, operation, FAILED, error)
        if operation.followInstance:
            return self._follow_instance(message, operation, deadline)

        answer = self._arm.operation_status(
            operation.statusUrl, is_async=operation.isAsync, resource_uri=operation.resourceUri, deadline=deadline
        )
        if answer.status_code is not None or (answer.error or {}).get("code") in ("Timeout", "ConnectionError"):
            operation.pollCount += 1  # a status GET was made (answered, timed out or dropped)
        if answer.state == arm.RUNNING:
            return self._running(message, operation, answer)
        if answer.state == arm.SUCCEEDED:
            return self._finish(message, operation, SUCCEEDED)
        if answer.state == arm.NOT_PERMITTED and operation.checkpointId is not None:
            logger.warning("the status URL answered HTTP %s: following the VM instance instead", answer.status_code)
            operation.followInstance = True
            operation.statusReadError = compact_error(answer.error)
            return self._follow_instance(message, operation, deadline)
        if answer.state in (arm.FAILED, arm.NOT_PERMITTED):
            verdict = verify(self._arm, operation.resourceUri, operation.checkpointId, deadline)
            if verdict.state == ABSENT:
                return self._finish(message, operation, SUCCEEDED, verified=verified_absent(answer.error))
            if verdict.state == UNREADABLE_NOW:
                return self._transient(message, operation, verdict.answer, deadline)
            return self._finish(message, operation, FAILED, answer.error)
        return self._transient(message, operation, answer, deadline)

    def _follow_instance(self, message, operation: Operation, deadline: Deadline) -> str:
        verdict = verify(self._arm, operation.resourceUri, operation.checkpointId, deadline)
        if verdict.state == ABSENT:
            return self._finish(message, operation, SUCCEEDED, verified=verified_absent(operation.statusReadError))
        if verdict.state == PRESENT:  # still merging: look again later
            return self._running(message, operation, ArmAnswer(arm.RUNNING))
        if verdict.state == UNREADABLE_NOW:
            return self._transient(message, operation, verdict.answer, deadline)
        return self._finish(message, operation, FAILED, operation.statusReadError)  # neither can be read

    def _transient(self, message, operation: Operation, answer: ArmAnswer, deadline: Deadline) -> str:
        if (answer.error or {}).get("code") == "OutOfTime":
            return "deferred"  # nothing was learnt: the message reappears after its lease
        now = self._clock()
        operation.transientFailures += 1
        operation.failingSince = operation.failingSince or now
        operation.lastError = compact_error(answer.error)  # the tracking message stays small
        if now - operation.failingSince >= self._window:
            verdict = verify(self._arm, operation.resourceUri, operation.checkpointId, deadline)
            if verdict.state == ABSENT:
                return self._finish(message, operation, SUCCEEDED, verified=verified_absent(answer.error))
            tries = f"{operation.transientFailures} status reads in a row over {now - operation.failingSince:.0f} s"
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
        operation.failingSince = None
        operation.lastError = None
        retry_after = answer.retry_after
        if operation.followInstance and retry_after is None:
            retry_after = self._retry.delay(1)
        self._tracking.reschedule(
            message, operation, visibility_delay(retry_after, DEFAULT_RETRY_AFTER, MIN_RECHECK_SECONDS)
        )
        return "running"

    def _finish(
        self, message, operation: Operation, status: str, error: dict | None = None, verified: dict | None = None
    ) -> str:
        now = self._clock()
        facts = {**operation.facts(), **(verified or {}), "completedAt": now}
        # The event first: a crash before the delete repeats the event (same id) and loses nothing.
        self._events.write(outcome_event(status, facts, now, error))
        self._tracking.remove(message)
        return status.lower()
