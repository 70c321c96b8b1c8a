"""The submit step: one deletion request from the requests queue to ARM, then to tracking and events."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from . import telemetry
from .arm_answers import DEFAULT_RETRY_AFTER, AnswerState, ArmAnswer
from .arm_client import ArmClient
from .budgets import DEFAULT_BUDGETS, Budgets, Deadline
from .errors import invalid_request, retries_exhausted, untrusted_operation_url
from .events import EventStatus, EventWriter, outcome_event
from .logs import get_logger, request_scope
from .outcomes import Outcome
from .policy_runs import FAILED, SUCCEEDED, PolicyRuns
from .policy_submit import PolicyDeferred, PolicySubmitter
from .request import DeletionRequest, InvalidRequest, decode_request
from .retry import SUBMIT_RETRY, RetryPolicy
from .tracking import Operation, TrackingStore, visibility_delay
from .turn_rows import Turn
from .verification import ABSENT, UNREADABLE_NOW, verified_absent, verify
from .vm_turns import TurnsBusy, VmTurns

logger = get_logger(__name__)


def follow_noted_operation(record: str, tracking: TrackingStore, events: EventWriter, now: float) -> Outcome:
    """A request whose deletion ARM accepted, noted in its VM's turn before the delivery that POSTed
    died (VmTurns.note_operation), comes again (or lands in the poison queue): its Accepted is written
    (again: the same id) and the operation tracked (again: at worst twice, and both trackers read the
    same status URL and end alike), instead of a POST that would meet the VM busy with it, or start a
    second deletion after it failed."""
    operation = Operation.from_message(record)
    operation.turnTag = None  # the row changed since the note: the give-back takes the long way
    logger.warning("an earlier delivery had this deletion accepted (%s): it is followed", operation.operationUrl)
    events.write(outcome_event(EventStatus.ACCEPTED, operation.facts(), now))
    tracking.add(operation, 0)
    return Outcome.ACCEPTED


class SubmitDeferred(Exception):
    """ARM kept failing transiently; the request message goes back to the queue for a later delivery."""


def request_facts(request: DeletionRequest) -> dict:
    return {
        "requestId": request.request_id,
        "correlationId": request.correlation_id,
        "resourceUri": request.resource_uri,
        "checkpointId": request.checkpoint_id,
        "traceparent": request.traceparent,
    }


class Submitter:
    """The submit step (queue trigger): decodes one request message and ends it in one of
    Failed/InvalidRequest, Accepted with a tracking message, Succeeded, Failed with ARM's error, or a
    redelivery (SubmitDeferred) after transient failures, and RetriesExhausted on the last delivery.
    A redelivery, a 404 or 409, and the last delivery read the VM instance first (verification).
    With `turns`, a deletion first takes its VM's turn (or waits for it) and gives it back once it
    has its terminal event; a policy request goes to the policy step (shared/policy_submit.py)."""

    def __init__(
        self,
        arm_client: ArmClient,
        tracking: TrackingStore,
        events: EventWriter,
        max_deliveries: int,
        retry: RetryPolicy = SUBMIT_RETRY,
        budgets: Budgets = DEFAULT_BUDGETS,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        turns: VmTurns | None = None,
        runs: PolicyRuns | None = None,
    ):
        self._arm = arm_client
        self._tracking = tracking
        self._events = events
        self._turns = turns
        self._policies = PolicySubmitter(arm_client, runs, events, max_deliveries, retry, clock, sleep)
        self._max_deliveries = max_deliveries
        self._retry = retry
        self._budgets = budgets
        self._clock = clock
        self._sleep = sleep

    def handle(self, body: bytes | str, message_id: str, dequeue_count: int) -> Outcome:
        """Process one request message; returns the outcome's name, or raises SubmitDeferred."""
        tel = telemetry.current()
        try:
            request = decode_request(body, message_id)
        except InvalidRequest as invalid:
            scope = request_scope(invalid.fields.get("requestId"), invalid.fields.get("correlationId"))
            with scope, tel.submit_span(invalid.fields) as span:
                logger.warning("invalid request: %s", invalid.message)
                error = invalid_request(invalid.message, invalid.target)
                self._events.write(outcome_event(EventStatus.FAILED, invalid.fields, self._clock(), error))
                tel.ended(span, Outcome.INVALID)
            return Outcome.INVALID
        facts = request_facts(request)
        with request_scope(request.request_id, request.correlation_id), tel.submit_span(facts) as span:
            # ARM's part ends early enough to leave time for the writes that follow
            deadline = Deadline(self._budgets.submit).earlier(self._budgets.storage_reserve)
            try:
                if request.policy is not None:
                    outcome = self._policies.handle(request, facts, dequeue_count, deadline)
                else:
                    outcome = self._take_turn_and_submit(request, facts, dequeue_count, deadline)
            except (SubmitDeferred, PolicyDeferred) as deferred:
                tel.ended(span, "deferred")
                raise SubmitDeferred(str(deferred)) from None
            tel.ended(span, outcome)
            return outcome

    def _take_turn_and_submit(self, request: DeletionRequest, facts: dict, dequeue_count: int, deadline) -> Outcome:
        try:
            turn = self._turns.take(facts, redelivered=dequeue_count > 1) if self._turns is not None else Turn()
        except TurnsBusy as busy:
            raise SubmitDeferred(str(busy)) from None
        if turn is None:
            return Outcome.WAITING
        outcome = self._submit(request, facts, dequeue_count, deadline, turn)
        if self._turns is not None and outcome not in (Outcome.ACCEPTED, Outcome.WAITING):
            ended = SUCCEEDED if outcome == Outcome.SUCCEEDED else FAILED
            self._turns.give_back(request.resource_uri, request.request_id, ended, turn.tag)
        return outcome

    def _submit(
        self, request: DeletionRequest, facts: dict, dequeue_count: int, deadline: Deadline, turn: Turn
    ) -> Outcome:
        if turn.operation:  # an earlier delivery had its deletion accepted and then died: follow that one
            return follow_noted_operation(turn.operation, self._tracking, self._events, self._clock())
        answer = None
        if dequeue_count > 1:  # an earlier delivery may have reached ARM: the instance says
            verdict = verify(self._arm, request.resource_uri, request.checkpoint_id, deadline)
            if verdict.state == ABSENT:
                return self._succeeded(facts, verified_absent(None))
            if verdict.state == UNREADABLE_NOW:
                answer = verdict.answer
        if answer is None:
            answer = self._try_within_budget(request, deadline)
        now = self._clock()
        if answer.state == AnswerState.ACCEPTED:
            return self._accepted(request, answer, now, turn)
        if answer.state == AnswerState.SUCCEEDED:
            return self._succeeded(facts, answer.verified or {})
        if answer.state == AnswerState.FAILED:
            if answer.status_code == 202:  # accepted, but with no status URL to follow: Accepted, then Failed
                self._events.write(outcome_event(EventStatus.ACCEPTED, {**facts, "submittedAt": now}, now))
            self._events.write(outcome_event(EventStatus.FAILED, {**facts, "completedAt": now}, now, answer.error))
            return Outcome.FAILED
        if dequeue_count < self._max_deliveries:
            logger.warning(
                "delivery %d of %d ends in a transient failure (%s); the queue will redeliver it",
                dequeue_count,
                self._max_deliveries,
                (answer.error or {}).get("code"),
            )
            raise SubmitDeferred(f"requestId={request.request_id}: {(answer.error or {}).get('code')}")
        verdict = verify(self._arm, request.resource_uri, request.checkpoint_id, deadline)
        if verdict.state == ABSENT:
            return self._succeeded(facts, verified_absent(answer.error))
        tries = f"{self._retry.attempts} tries in each of {self._max_deliveries} deliveries"
        self._events.write(
            outcome_event(
                EventStatus.FAILED, {**facts, "completedAt": now}, now, retries_exhausted(answer.error, tries)
            )
        )
        return Outcome.RETRIES_EXHAUSTED

    def _note(self, request: DeletionRequest, operation: Operation, tag: str | None) -> str | None:
        """Note the operation in the VM's turn row before it is tracked (see VmTurns.note_operation);
        returns the turn tag for the tracking record. A failure to note is logged, never a reason to
        lose the operation: it is tracked all the same."""
        try:
            return self._turns.note_operation(request.resource_uri, request.request_id, operation.to_message(), tag)
        except Exception:
            logger.exception("the accepted operation could not be noted in the VM's turn; it is tracked all the same")
            return tag  # if the note was written after all, the tag is stale and the give-back takes the long way

    def _try_within_budget(self, request: DeletionRequest, deadline: Deadline) -> ArmAnswer:
        answer = self._try_once(request, deadline)
        for attempt in range(1, self._retry.attempts):
            if answer.state != AnswerState.TRANSIENT:
                break
            if answer.retry_after is not None and answer.retry_after > self._retry.max_delay:
                break  # ARM asks for a longer pause than a delivery should hold a worker
            wait = self._retry.delay(attempt, answer.retry_after)
            if wait >= deadline.remaining():
                break  # the next try would not fit in this delivery's budget
            logger.info(
                "transient failure %s, try %d again in %.1f s", (answer.error or {}).get("code"), attempt + 1, wait
            )
            self._sleep(wait)
            answer = self._try_once(request, deadline)
        return answer

    def _try_once(self, request: DeletionRequest, deadline: Deadline) -> ArmAnswer:
        """One POST, and verification where its answer alone could mislead (404, 409)."""
        answer = self._arm.delete_checkpoint(request, deadline)
        if answer.state != AnswerState.FAILED or answer.status_code not in (404, 409):
            return answer
        verdict = verify(self._arm, request.resource_uri, request.checkpoint_id, deadline)
        if verdict.state == ABSENT:
            return replace(answer, state=AnswerState.SUCCEEDED, verified=verified_absent(answer.error))
        if verdict.state == UNREADABLE_NOW or answer.status_code == 409:
            # cannot tell now, or the VM is busy with a job (ours from an earlier try, or another): later
            return replace(answer, state=AnswerState.TRANSIENT)
        return answer

    def _succeeded(self, facts: dict, verified: dict) -> Outcome:
        now = self._clock()
        event_facts = {**facts, **verified, "submittedAt": now, "completedAt": now, "pollCount": 0}
        self._events.write(outcome_event(EventStatus.SUCCEEDED, event_facts, now))
        return Outcome.SUCCEEDED

    def _accepted(self, request: DeletionRequest, answer: ArmAnswer, now: float, turn: Turn) -> Outcome:
        operation = Operation.accepted(request, answer.location, answer.async_url, now)
        operation.turnTag = turn.tag
        operation.traceContext = telemetry.current().trace_context()  # every status read joins this trace
        untrusted = [url for url in (answer.location, answer.async_url) if url and not self._arm.is_trusted(url)]
        if untrusted:
            # ARM has accepted the deletion, but its status URL may not be sent a token.
            self._events.write(outcome_event(EventStatus.ACCEPTED, operation.facts(), now))
            error = untrusted_operation_url(untrusted[0])
            self._events.write(outcome_event(EventStatus.FAILED, {**operation.facts(), "completedAt": now}, now, error))
            return Outcome.UNTRUSTED_OPERATION_URL
        delay = visibility_delay(answer.retry_after, DEFAULT_RETRY_AFTER)
        if self._turns is not None:
            operation.turnTag = self._note(request, operation, turn.tag)
        sent = self._tracking.add(operation, delay)
        try:
            self._events.write(outcome_event(EventStatus.ACCEPTED, operation.facts(), now))
        except Exception:
            # The operation is tracked: a redelivery would POST again, meet the VM busy with it and could
            # end Failed while the poller ends it Succeeded. The poller writes the Accepted instead.
            logger.exception("the Accepted event could not be written; the poller will write it")
            operation.acceptedPending = True
            self._tracking.reschedule(sent, operation, delay)
        return Outcome.ACCEPTED
