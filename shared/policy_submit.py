"""The submit step of a policy request: read the VM instance, select, and start the run.

A dry run, or a policy that selects nothing, ends here with its `Completed` event. A VM instance
that cannot be read ends the policy with `ScVmm.CheckpointPolicy.Failed` (ARM's error, or
RetriesExhausted when transient failures did not stop within the request's deliveries). Otherwise
the run's deletions are queued on the VM (shared/policy_runs.py); the run's own event comes when
the last of them has ended. A redelivered policy request whose run exists goes on with that run,
without reading the instance again (a second selection would see the run's own deletions).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .arm_answers import AnswerState
from .arm_client import ArmClient
from .budgets import Deadline
from .errors import ErrorCode, app_error, retries_exhausted
from .events import EventWriter
from .logs import get_logger
from .outcomes import Outcome
from .policy import COMPLETED, FAILED, chain_order, policy_event, select
from .policy_runs import PolicyRuns
from .request import DeletionRequest
from .retry import SUBMIT_RETRY, RetryPolicy

logger = get_logger(__name__)


class PolicyDeferred(Exception):
    """The instance could not be read now; the policy request goes back to the queue."""


class PolicySubmitter:
    def __init__(
        self,
        arm: ArmClient,
        runs: PolicyRuns | None,
        events: EventWriter,
        max_deliveries: int,
        retry: RetryPolicy = SUBMIT_RETRY,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._arm = arm
        self._runs = runs
        self._events = events
        self._max_deliveries = max_deliveries
        self._retry = retry
        self._clock = clock
        self._sleep = sleep

    def handle(self, request: DeletionRequest, facts: dict, dequeue_count: int, deadline: Deadline) -> Outcome:
        policy = request.policy
        facts = {k: facts.get(k) for k in ("requestId", "correlationId", "resourceUri", "traceparent")}
        if (
            self._runs is not None
            and not policy.dry_run
            and self._runs.started(request.resource_uri, request.request_id)
        ):
            self._runs.start(facts, policy, None)
            return Outcome.POLICY_STARTED
        answer = self._read_instance(request.resource_uri, deadline)
        if answer.state == AnswerState.SUCCEEDED:
            selection = select(policy, chain_order(list(answer.entries or ())))
            if policy.dry_run or not selection.delete:
                deleted = selection.delete if policy.dry_run else []
                event = policy_event(COMPLETED, facts, policy, self._clock(), deleted=deleted, kept=selection.keep)
                self._events.write(event)
                return Outcome.POLICY_COMPLETED
            if self._runs is None:
                message = (
                    "retention policies need the table service of the app's storage account "
                    "(AzureWebJobsStorage__tableServiceUri, or a TableEndpoint in the connection string)"
                )
                return self._failed(facts, policy, app_error(ErrorCode.POLICIES_UNAVAILABLE, message))
            logger.info("policy: %d to delete, %d kept", len(selection.delete), len(selection.keep))
            self._runs.start(facts, policy, selection)
            return Outcome.POLICY_STARTED
        if answer.state == AnswerState.FAILED:
            return self._failed(facts, policy, answer.error)
        if dequeue_count < self._max_deliveries:
            raise PolicyDeferred(f"requestId={request.request_id}: {(answer.error or {}).get('code')}")
        tries = f"{self._retry.attempts} tries in each of {self._max_deliveries} deliveries"
        return self._failed(facts, policy, retries_exhausted(answer.error, tries))

    def _read_instance(self, resource_uri: str, deadline: Deadline):
        answer = self._arm.read_instance(resource_uri, deadline)
        for attempt in range(1, self._retry.attempts):
            if answer.state != AnswerState.TRANSIENT:
                break
            wait = self._retry.delay(attempt, answer.retry_after)
            if wait >= deadline.remaining() or wait > self._retry.max_delay:
                break
            self._sleep(wait)
            answer = self._arm.read_instance(resource_uri, deadline)
        return answer

    def _failed(self, facts: dict, policy, error: dict) -> Outcome:
        self._events.write(policy_event(FAILED, facts, policy, self._clock(), error=error))
        return Outcome.POLICY_FAILED
