"""Verification: the VM instance itself says whether a checkpoint still exists (contract section 5).

Used where an answer alone could mislead: a redelivered request (ARM may already have accepted
it), a 404 or 409 to the POST, an operation that ended Failed, a status URL the identity may not
read, and a request about to end in RetriesExhausted. A request without a checkpoint id cannot
be verified.
"""

from __future__ import annotations

from dataclasses import dataclass

from .arm_answers import AnswerState, ArmAnswer
from .arm_client import ArmClient
from .budgets import Deadline
from .logs import get_logger

logger = get_logger(__name__)

ABSENT = "absent"  # the instance was read and does not list the checkpoint
PRESENT = "present"  # ... lists it
UNKNOWN = "unknown"  # no checkpoint id, or the read failed for good (404 for the instance, other 4xx)
UNREADABLE_NOW = "unreadable-now"  # the read failed transiently; `answer` says how


@dataclass(frozen=True)
class Verdict:
    state: str
    answer: ArmAnswer | None = None


def verify(arm: ArmClient, resource_uri: str, checkpoint_id: str | None, deadline: Deadline | None) -> Verdict:
    if checkpoint_id is None:
        return Verdict(UNKNOWN)
    answer = arm.read_instance(resource_uri, deadline)
    if answer.state == AnswerState.SUCCEEDED:
        state = PRESENT if checkpoint_id in answer.checkpoints else ABSENT
        logger.info(
            "verification: the VM instance %s the checkpoint", "lists" if state == PRESENT else "no longer lists"
        )
        return Verdict(state, answer)
    if answer.state == AnswerState.TRANSIENT:
        return Verdict(UNREADABLE_NOW, answer)
    logger.info("verification: the VM instance could not be read (HTTP %s)", answer.status_code)
    return Verdict(UNKNOWN, answer)


def verified_absent(arm_error: dict | None) -> dict:
    """The facts an event carries when the instance decided the outcome."""
    facts: dict = {"verification": "checkpointAbsent"}
    if arm_error is not None:
        facts["armError"] = arm_error
    return facts
