"""How one step ended for one request or operation: what the submit and poll steps return (and
count), for logs and tests. Events say the outcome to the outside; these names stay inside."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    # submit: what became of one request message
    INVALID = "invalid"  # Failed/InvalidRequest
    ACCEPTED = "accepted"  # tracked; Accepted emitted
    SUCCEEDED = "succeeded"  # Succeeded emitted
    FAILED = "failed"  # Failed emitted
    RETRIES_EXHAUSTED = "retries-exhausted"  # Failed/RetriesExhausted emitted
    UNTRUSTED_OPERATION_URL = "untrusted-operation-url"  # Accepted, then Failed/UntrustedOperationUrl
    WAITING = "waiting"  # its VM is busy: it waits its turn (shared/vm_turns.py), the message is consumed
    POLICY_STARTED = "policy-started"  # a policy run's deletions were queued on the VM
    POLICY_COMPLETED = "policy-completed"  # ScVmm.CheckpointPolicy.Completed emitted (dry run, nothing to delete)
    POLICY_FAILED = "policy-failed"  # ScVmm.CheckpointPolicy.Failed emitted
    # poll: what became of one status read of a tracked operation
    RUNNING = "running"  # read again later (held in the run or back on the queue)
    TRANSIENT = "transient"  # a transient failure; read again later
    DEFERRED = "deferred"  # no time left to read it: the message reappears after its lease
    DISCARDED = "discarded"  # not an operation record: deleted
    ERROR = "error"  # an unexpected error: the message reappears after its lease
    UNFINISHED = "unfinished"  # still at work when the run's budget ended
