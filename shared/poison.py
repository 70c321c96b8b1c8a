"""The poison step: a request message the host gave up on, turned into one terminal event."""

from __future__ import annotations

import time
from collections.abc import Callable

from .arm_client import ArmClient
from .budgets import DEFAULT_BUDGETS, Budgets, Deadline
from .errors import poisoned
from .events import EventStatus, EventWriter, outcome_event
from .logs import get_logger, request_scope
from .policy import FAILED as FAILED_EVENT
from .policy import policy_event
from .policy_runs import FAILED, SUCCEEDED, PolicyRuns
from .request import DeletionRequest, InvalidRequest, decode_request
from .retry import SUBMIT_RETRY, RetryPolicy
from .submit import follow_noted_operation, request_facts
from .tracking import TrackingStore
from .verification import ABSENT, UNREADABLE_NOW, verified_absent, verify
from .vm_turns import VmTurns

logger = get_logger(__name__)

POLICY_FACTS = ("requestId", "correlationId", "resourceUri", "traceparent")


class PoisonHandler:
    """Turns a request message that landed in the poison queue into one terminal event; never crashes
    on what the message holds (whatever can be read of the request goes into the event)."""

    def __init__(
        self,
        arm_client: ArmClient,
        events: EventWriter,
        retry: RetryPolicy = SUBMIT_RETRY,
        budgets: Budgets = DEFAULT_BUDGETS,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        turns: VmTurns | None = None,
        runs: PolicyRuns | None = None,
        tracking: TrackingStore | None = None,
    ):
        self._arm = arm_client
        self._events = events
        self._turns = turns
        self._runs = runs
        self._tracking = tracking
        self._retry = retry
        self._budgets = budgets
        self._clock = clock
        self._sleep = sleep

    def _verify(self, request: DeletionRequest, deadline: Deadline):
        """The instance's verdict; a transient failure to read it is retried within the budget."""
        verdict = verify(self._arm, request.resource_uri, request.checkpoint_id, deadline)
        for attempt in range(1, self._retry.attempts):
            if verdict.state != UNREADABLE_NOW:
                break
            wait = self._retry.delay(attempt, verdict.answer.retry_after)
            if wait >= deadline.remaining():
                break
            self._sleep(wait)
            verdict = verify(self._arm, request.resource_uri, request.checkpoint_id, deadline)
        return verdict

    def handle(self, body: bytes | str, message_id: str) -> None:
        facts: dict = {"requestId": message_id}
        verified = request = None
        try:
            request = decode_request(body, message_id)
            facts = request_facts(request)
            if request.policy is not None:
                self._policy_poisoned(request, facts)
                return
            with request_scope(request.request_id, request.correlation_id):
                if self._follows_noted_operation(request):
                    return
                deadline = Deadline(self._budgets.submit).earlier(self._budgets.storage_reserve)
                verdict = self._verify(request, deadline)
            if verdict.state == ABSENT:
                verified = verified_absent(None)
        except InvalidRequest as invalid:
            facts = invalid.fields or facts
        except Exception:  # nothing the message holds may stop its event
            logger.exception("requestId=%s: the poisoned request could not be read in full", facts["requestId"])
        now = self._clock()
        with request_scope(facts.get("requestId"), facts.get("correlationId")):
            if verified:
                self._events.write(
                    outcome_event(
                        EventStatus.SUCCEEDED, {**facts, **verified, "submittedAt": now, "completedAt": now}, now
                    )
                )
            else:
                logger.error("the request landed in the poison queue (message %s)", message_id)
                error = poisoned()
                self._events.write(outcome_event(EventStatus.FAILED, {**facts, "completedAt": now}, now, error))
            if request is not None and self._turns is not None:  # it may hold its VM's turn
                self._turns.give_back(request.resource_uri, request.request_id, SUCCEEDED if verified else FAILED)

    def _follows_noted_operation(self, request: DeletionRequest) -> bool:
        """Whether ARM accepted this request's deletion before its process died (noted in the VM's
        turn): then that operation is followed, and its own terminal event gives the turn back."""
        if self._turns is None or self._tracking is None:
            return False
        noted = self._turns.noted_operation(request.resource_uri, request.request_id)
        if not noted:
            return False
        logger.error("the request landed in the poison queue after ARM accepted its deletion")
        follow_noted_operation(noted, self._tracking, self._events, self._clock())
        return True

    def _policy_poisoned(self, request: DeletionRequest, facts: dict) -> None:
        """A policy request: its run goes on when it was started (its own event closes it), else the
        policy ends Failed."""
        with request_scope(request.request_id, request.correlation_id):
            if self._runs is not None and self._runs.started(request.resource_uri, request.request_id):
                logger.error("the policy request landed in the poison queue; its run goes on")
                self._runs.start({k: facts.get(k) for k in POLICY_FACTS}, request.policy, None)
                return
            logger.error("the policy request landed in the poison queue")
            facts = {k: facts.get(k) for k in POLICY_FACTS}
            self._events.write(policy_event(FAILED_EVENT, facts, request.policy, self._clock(), error=poisoned()))
