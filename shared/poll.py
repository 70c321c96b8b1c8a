"""The poll step: due operations from the tracking queue, their status URLs, and the outcome events.

Operations are polled concurrently as they come (a slow status read holds only its own worker),
each within a deadline that leaves time for its writes and ends before its lease does; the run
ends within its budget whatever hangs.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from . import telemetry
from .arm_answers import DEFAULT_RETRY_AFTER, AnswerState, ArmAnswer
from .arm_client import ArmClient
from .budgets import DEFAULT_BUDGETS, Budgets, Deadline
from .cleaning import compact_error
from .errors import ErrorCode, operation_timed_out, retries_exhausted, untrusted_operation_url
from .events import EventStatus, EventWriter, outcome_event
from .logs import get_logger, request_scope
from .outcomes import Outcome
from .policy_runs import FAILED, SUCCEEDED
from .retry import POLL_RETRY, RetryPolicy
from .tracking import Operation, TrackingStore, visibility_delay
from .verification import ABSENT, PRESENT, UNREADABLE_NOW, verified_absent, verify
from .vm_turns import VmTurns

logger = get_logger(__name__)

BATCH_SIZE = 32
MIN_RECHECK_SECONDS = 1  # a status URL is never read twice within a second, whatever Retry-After says
MIN_ITEM_SECONDS = 5.0  # an operation is only taken with at least this long left for its ARM calls
QUEUE_LOOK_SECONDS = 1.0  # a run that found the queue drained looks at it again this much later
# A running operation is held in the run (no storage call) only for a read due this soon: a crash while
# it is held delays it until its lease ends, so long waits, and transient failures' backoff, go back
# to the tracking queue, where a crash delays them by nothing.
HOLD_MAX_SECONDS = 10.0
# After polling an operation failed (storage timing out, say), it is looked at again this soon
# rather than when its lease ends (budgets.poll_lease, 120 s), which left its VM idle that long.
AFTER_FAILURE_SECONDS = 10
SWEEP_SECONDS = 300.0  # how often a poll run mends VM turns that stopped moving
STALE_MARGIN_SECONDS = 3600.0  # a holder this much older than OPERATION_TIMEOUT_SECONDS is passed over

_order = itertools.count()


@dataclass(order=True)
class Recheck:
    """An operation held in the run, to be read again at `at` (monotonic), within its lease."""

    at: float
    seq: int = field(default_factory=lambda: next(_order))
    item: tuple = field(default=(), compare=False)
    deadline: Deadline | None = field(default=None, compare=False)
    outcome: Outcome = field(default=Outcome.RUNNING, compare=False)


class Poller:
    """The poll step (timer trigger): reads the status URLs of due tracked operations concurrently,
    holds a running one in the run until its next read when that falls within its lease (else puts
    it back on the tracking queue), and ends each in Succeeded or Failed: the event first, then the
    tracking message is deleted; between the two, the VM's turn is given back (shared/vm_turns.py)."""

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
        turns: VmTurns | None = None,
    ):
        self._arm = arm_client
        self._tracking = tracking
        self._events = events
        self._turns = turns
        self._next_sweep = 0.0
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
        """Poll due operations until none is due or held, or the run's budget is spent.

        An operation still running whose next status read falls within its lease is held in the
        run and read again when its `Retry-After` ends, without a storage call; others go back to
        the tracking queue, invisible until they are due. While it holds operations, the run looks
        at the queue for newly due ones every QUEUE_LOOK_SECONDS.

        `thread_init` runs in each worker thread before it polls (the host uses it to tie log lines
        to the invocation). Returns how many status reads ended in each way ("running", "succeeded", ...).
        """
        started = time.monotonic()
        self._sweep_turns()
        run = Deadline(self._budgets.poll_run)
        # ARM work of an operation ends early enough for its writes, within the run and its lease
        reserve = self._budgets.storage_reserve
        outcomes: Counter = Counter()
        in_flight: set = set()
        held: list[Recheck] = []  # a heap, soonest first
        next_look = 0.0  # monotonic time the queue may be looked at again once drained

        def start(item, deadline: Deadline) -> None:
            in_flight.add(self._pool.submit(self._poll_in_worker, item, deadline, thread_init))

        while run.remaining() > 0:
            now = time.monotonic()
            while held and held[0].at <= now and len(in_flight) < self._concurrency:
                recheck = heapq.heappop(held)
                start(recheck.item, recheck.deadline)
            room = 2 * self._concurrency - len(in_flight)
            if now >= next_look and room > self._concurrency and run.remaining() > reserve + MIN_ITEM_SECONDS:
                wanted = min(BATCH_SIZE, room)
                item_deadline = run.min(Deadline(self._budgets.poll_lease)).earlier(reserve)
                batch = self._take(wanted)
                if len(batch) < wanted:  # drained: look again a little later
                    next_look = now + QUEUE_LOOK_SECONDS
                for item in batch:
                    start(item, item_deadline)
                if batch:
                    continue
            if not in_flight and not held:
                break
            waits = [run.remaining()]
            if held and len(in_flight) < self._concurrency:  # else a worker comes free first
                waits.append(held[0].at - now)
            if now < next_look and run.remaining() > reserve + MIN_ITEM_SECONDS:
                waits.append(next_look - now)
            timeout = max(0.0, min(waits))
            if not in_flight:
                time.sleep(timeout)
                continue
            done, in_flight = wait(in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
            for future in done:
                result = future.result()
                if isinstance(result, Recheck):
                    heapq.heappush(held, result)
                    result = result.outcome
                outcomes[result] += 1
        if in_flight or held:
            logger.error(
                "poll run: %d operation(s) still at work and %d held at the end of the budget",
                len(in_flight),
                len(held),
            )
            outcomes[Outcome.UNFINISHED] += len(in_flight) + len(held)
        if outcomes:
            logger.info("poll run: %s in %.1f s", {str(k): v for k, v in outcomes.items()}, time.monotonic() - started)
        return outcomes

    def _take(self, wanted: int) -> list:
        try:
            return list(self._tracking.receive_due(wanted, int(self._budgets.poll_lease)))
        except Exception:  # storage failing: what was taken is finished, the rest waits for a later run
            logger.exception("poll run: could not take due operations from the tracking queue")
            return []

    def _sweep_turns(self) -> None:
        """Every SWEEP_SECONDS: mend VM turns that stopped moving (shared/vm_turns.py, `sweep`)."""
        if self._turns is None or time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + SWEEP_SECONDS
        try:
            self._turns.sweep(stale_after=self._timeout + STALE_MARGIN_SECONDS)
        except Exception:  # the next sweep tries again; polling goes on
            logger.exception("sweeping the VM turns failed")

    def _poll_in_worker(self, item, deadline: Deadline, thread_init: Callable[[], None] | None) -> Outcome | Recheck:
        if thread_init is not None:
            thread_init()
        message, operation = item
        if operation is None:
            self._tracking.remove(message)
            return Outcome.DISCARDED
        if deadline.remaining() < MIN_ITEM_SECONDS:
            return Outcome.DEFERRED  # waited too long for a worker: the message reappears after its lease
        tel = telemetry.current()
        try:
            with request_scope(operation.requestId, operation.correlationId), tel.poll_span(operation) as span:
                try:
                    result = self._poll_one(message, operation, deadline)
                except Exception:
                    tel.ended(span, Outcome.ERROR, operation)
                    raise
                tel.ended(span, result.outcome if isinstance(result, Recheck) else result, operation)
                return result
        except Exception:
            logger.exception(
                "requestId=%s: polling failed; retried in %d s", operation.requestId, AFTER_FAILURE_SECONDS
            )
            try:  # what it learnt is kept with it (a repeat of an event it wrote has the same id)
                self._tracking.reschedule(message, operation, AFTER_FAILURE_SECONDS)
            except Exception:  # storage still failing: the message reappears when its lease ends
                logger.warning("requestId=%s: retried after the lease instead", operation.requestId)
            return Outcome.ERROR

    def _poll_one(self, message, operation: Operation, deadline: Deadline) -> Outcome | Recheck:
        if operation.acceptedPending:  # the submit step could not write it: the first look does
            self._events.write(outcome_event(EventStatus.ACCEPTED, operation.facts(), self._clock()))
            operation.acceptedPending = False  # kept with the record's next update (a repeat has the same id)
        if self._clock() - operation.submittedAt >= self._timeout:
            verdict = verify(self._arm, operation.resourceUri, operation.checkpointId, deadline)
            if verdict.state == ABSENT:
                return self._finish(
                    message, operation, EventStatus.SUCCEEDED, verified=verified_absent(operation.statusReadError)
                )
            error = operation_timed_out(self._timeout)
            return self._finish(message, operation, EventStatus.FAILED, error)
        if operation.followInstance:
            return self._follow_instance(message, operation, deadline)

        answer = self._arm.operation_status(
            operation.statusUrl, is_async=operation.isAsync, resource_uri=operation.resourceUri, deadline=deadline
        )
        if answer.status_code is not None or (answer.error or {}).get("code") in (
            ErrorCode.TIMEOUT,
            ErrorCode.CONNECTION_ERROR,
        ):
            operation.pollCount += 1  # a status GET was made (answered, timed out or dropped)
        if answer.state == AnswerState.RUNNING:
            return self._running(message, operation, answer, deadline)
        if answer.state == AnswerState.SUCCEEDED:
            return self._finish(message, operation, EventStatus.SUCCEEDED)
        if answer.state == AnswerState.NOT_PERMITTED and operation.checkpointId is not None:
            logger.warning("the status URL answered HTTP %s: following the VM instance instead", answer.status_code)
            operation.followInstance = True
            operation.statusReadError = compact_error(answer.error)
            return self._follow_instance(message, operation, deadline)
        if answer.state == AnswerState.FAILED and 300 <= (answer.status_code or 0) < 400:
            # a redirect where a status was expected ends the operation Failed (contract, Security)
            return self._finish(message, operation, EventStatus.FAILED, answer.error)
        if answer.state in (AnswerState.FAILED, AnswerState.NOT_PERMITTED):
            verdict = verify(self._arm, operation.resourceUri, operation.checkpointId, deadline)
            if verdict.state == ABSENT:
                return self._finish(message, operation, EventStatus.SUCCEEDED, verified=verified_absent(answer.error))
            if verdict.state == UNREADABLE_NOW:
                return self._transient(message, operation, verdict.answer, deadline)
            return self._finish(message, operation, EventStatus.FAILED, answer.error)
        return self._transient(message, operation, answer, deadline)

    def _follow_instance(self, message, operation: Operation, deadline: Deadline) -> Outcome | Recheck:
        verdict = verify(self._arm, operation.resourceUri, operation.checkpointId, deadline)
        if verdict.state == ABSENT:
            return self._finish(
                message, operation, EventStatus.SUCCEEDED, verified=verified_absent(operation.statusReadError)
            )
        if verdict.state == PRESENT:  # still merging: look again later
            return self._running(message, operation, ArmAnswer(AnswerState.RUNNING), deadline)
        if verdict.state == UNREADABLE_NOW:
            return self._transient(message, operation, verdict.answer, deadline)
        return self._finish(message, operation, EventStatus.FAILED, operation.statusReadError)  # neither can be read

    def _transient(self, message, operation: Operation, answer: ArmAnswer, deadline: Deadline) -> Outcome | Recheck:
        if (answer.error or {}).get("code") == ErrorCode.OUT_OF_TIME:
            return Outcome.DEFERRED  # nothing was learnt: the message reappears after its lease
        now = self._clock()
        operation.transientFailures += 1
        operation.failingSince = operation.failingSince or now
        operation.lastError = compact_error(answer.error)  # the tracking message stays small
        if now - operation.failingSince >= self._window:
            verdict = verify(self._arm, operation.resourceUri, operation.checkpointId, deadline)
            if verdict.state == ABSENT:
                return self._finish(message, operation, EventStatus.SUCCEEDED, verified=verified_absent(answer.error))
            tries = f"{operation.transientFailures} status reads in a row over {now - operation.failingSince:.0f} s"
            return self._finish(message, operation, EventStatus.FAILED, retries_exhausted(answer.error, tries))
        delay = self._retry.delay(operation.transientFailures, answer.retry_after)
        return self._later(message, operation, delay, deadline, Outcome.TRANSIENT, hold=False)

    def _running(self, message, operation: Operation, answer: ArmAnswer, deadline: Deadline) -> Outcome | Recheck:
        if answer.location and not operation.isAsync:
            if not self._arm.is_trusted(answer.location):
                error = untrusted_operation_url(answer.location)
                return self._finish(message, operation, EventStatus.FAILED, error)
            operation.statusUrl = answer.location
        operation.transientFailures = 0
        operation.failingSince = None
        operation.lastError = None
        retry_after = answer.retry_after
        if operation.followInstance and retry_after is None:
            retry_after = self._retry.delay(1)
        return self._later(message, operation, retry_after, deadline, Outcome.RUNNING)

    def _later(
        self,
        message,
        operation: Operation,
        seconds: float | None,
        deadline: Deadline,
        outcome: Outcome,
        hold: bool = True,
    ) -> Outcome | Recheck:
        """Read the status again in `seconds` (or DEFAULT_RETRY_AFTER): held in this run when that is
        at most HOLD_MAX_SECONDS away and within the operation's deadline (no storage call), else back
        to the tracking queue. A crash while it is held loses nothing: the message reappears when its
        lease ends."""
        delay = max(MIN_RECHECK_SECONDS, DEFAULT_RETRY_AFTER if seconds is None else seconds)
        if hold and delay <= HOLD_MAX_SECONDS and delay + MIN_ITEM_SECONDS <= deadline.remaining():
            return Recheck(time.monotonic() + delay, item=(message, operation), deadline=deadline, outcome=outcome)
        self._tracking.reschedule(message, operation, visibility_delay(delay, DEFAULT_RETRY_AFTER, MIN_RECHECK_SECONDS))
        return outcome

    def _finish(
        self,
        message,
        operation: Operation,
        status: EventStatus,
        error: dict | None = None,
        verified: dict | None = None,
    ) -> Outcome:
        now = self._clock()
        facts = {**operation.facts(), **(verified or {}), "completedAt": now}
        # The event first: a crash before the delete repeats the event (same id) and loses nothing.
        self._events.write(outcome_event(status, facts, now, error))
        if self._turns is not None:  # a crash before the delete gives it back again: a no-op then
            ended = SUCCEEDED if status == EventStatus.SUCCEEDED else FAILED
            self._turns.give_back(operation.resourceUri, operation.requestId, ended, operation.turnTag)
        self._tracking.remove(message)
        return Outcome(status.lower())
