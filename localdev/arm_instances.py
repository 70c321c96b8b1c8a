"""The VM-instance model of the ARM emulator: which checkpoints each VM instance has, the truth that
deletions change.

A VM instance exists only once it is defined (:meth:`VmInstances.define`, the emulator's
``set_checkpoints``); requests for an undefined one behave as they always did. For a defined one:

- ``GET {resourceUri}/providers/Microsoft.ScVmm/virtualMachineInstances/default`` answers its
  current checkpoint chain (root first, each later one's ``parentCheckpointID`` the one before it);
- a deleteCheckpoint POST naming a checkpoint it does not have answers 404 and starts nothing;
- an operation that ends Succeeded removes its checkpoint at the moment it completes (done-at-once
  answers at once); Failed and Canceled ones leave it;
- an operation that completes by time alone (``done_after_polls == 0``) is complete at
  ``created + done_after_seconds`` whether or not anybody polls it: an instance GET or a POST on
  the VM settles every due operation of that VM first.

With ``one_job_per_vm``, a POST on a VM (defined or not) while one of its operations runs answers
409 ``Conflict``, as SCVMM does when the VM is busy with another job.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from localdev.arm_common import Reply, norm_resource
from localdev.arm_records import Operation
from localdev.arm_scenario import Fault, Scenario, after_fault, fault_reply, fault_stops

__all__ = ["INSTANCE_TYPE", "Deletion", "VmInstances"]

INSTANCE_TYPE = "Microsoft.ScVmm/virtualMachineInstances"
_CHECKPOINT_KEYS = {"checkpointID", "name", "description", "parentCheckpointID"}


@dataclass(frozen=True)
class Deletion:
    """A checkpoint the emulator actually removed."""

    resource_uri: str  # the instance's resourceUri as defined
    checkpoint_id: str
    operation_id: str | None  # None: removed by a done-at-once answer (200/204 to the POST)
    time: float  # time.time() of the removal (the operation's completion)


@dataclass(frozen=True)
class _Checkpoint:
    id: str
    name: str
    description: str


@dataclass
class _Instance:
    resource_uri: str
    checkpoints: list[_Checkpoint]


def _checkpoint(item: str | dict) -> _Checkpoint:
    if isinstance(item, str):
        if not item:
            raise ValueError("a checkpoint id must be a non-empty string")
        return _Checkpoint(item, item, "")
    if not isinstance(item, dict):
        raise TypeError(f"a checkpoint is an id (str) or a dict, not {type(item).__name__}")
    unknown = set(item) - _CHECKPOINT_KEYS
    if unknown:
        raise ValueError(f"unknown checkpoint keys {sorted(unknown)}; expected {sorted(_CHECKPOINT_KEYS)}")
    cid = item.get("checkpointID")
    if not isinstance(cid, str) or not cid:
        raise ValueError(f"a checkpoint dict needs a non-empty str 'checkpointID': {item!r}")
    # parentCheckpointID is accepted (a body read back) but the chain order decides it
    return _Checkpoint(cid, str(item.get("name", cid)), str(item.get("description", "")))


class VmInstances:
    """VM instances, their checkpoints, the deletions done and the operations running per VM.

    Shares the emulator's lock, so that checking a VM and starting an operation on it is atomic.
    """

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._instances: dict[str, _Instance] = {}
        self._running: dict[str, list[Operation]] = {}
        self._fault_progress: dict[str, tuple[Scenario, int]] = {}
        self.deletions: list[Deletion] = []
        # POSTs that came while another operation ran on the same VM (refused with 409 or not): a
        # client that keeps to one operation per VM makes none
        self.overlaps = 0

    # ---- definition ------------------------------------------------------------------------------
    def define(self, resource_uri: str, checkpoints: list[str | dict]) -> None:
        """Define (or redefine) the instance at ``resource_uri`` with ``checkpoints``, root first."""
        if not resource_uri.strip("/") or "" in resource_uri.strip("/").split("/"):
            raise ValueError(f"not a resourceUri: {resource_uri!r}")
        if isinstance(checkpoints, str | dict):
            raise TypeError("checkpoints is a list of ids or dicts")
        chain = [_checkpoint(c) for c in checkpoints]
        ids = [c.id for c in chain]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate checkpoint ids: {ids}")
        with self._lock:
            self._instances[norm_resource(resource_uri)] = _Instance("/" + resource_uri.strip("/"), chain)

    def ids(self, resource_uri: str, now: float | None = None) -> list[str]:
        """The instance's checkpoint ids, its due operations settled first (as of ``now``)."""
        with self._lock:
            inst = self._instances.get(norm_resource(resource_uri))
            if inst is None:
                return []
            self.settle(resource_uri, time.time() if now is None else now)
            return [c.id for c in inst.checkpoints]

    def exists(self, resource_uri: str, checkpoint_id: str) -> bool:
        return checkpoint_id in self.ids(resource_uri)

    def all_deletions(self, now: float | None = None) -> list[Deletion]:
        """Every checkpoint removed, in order, the due operations of every instance settled first."""
        with self._lock:
            for key in list(self._instances):
                self.settle(key, time.time() if now is None else now)
            return list(self.deletions)

    def clear(self) -> None:
        """Forget the deletion log and the instance-fault progress; instances stay."""
        with self._lock:
            self.deletions.clear()
            self._fault_progress.clear()
            self.overlaps = 0

    def forget(self) -> None:
        """Forget everything: instances, running operations, deletions."""
        with self._lock:
            self.clear()
            self._instances.clear()
            self._running.clear()

    # ---- operations ------------------------------------------------------------------------------
    def started(self, op: Operation) -> None:
        """An operation was started on ``op.resource_uri``."""
        with self._lock:
            self._running.setdefault(norm_resource(op.resource_uri), []).append(op)

    def completed(self, op: Operation) -> None:
        """``op`` has just completed (``op.completed_at`` set): a success removes its checkpoint, as
        of the moment it completed (its due time when it completes by time alone)."""
        if op.scenario.succeeds and op.checkpoint_id is not None:
            due = op.due_at
            when = due if due is not None else (op.completed_at or op.created)
            self.remove(op.resource_uri, op.checkpoint_id, op.id, when)

    def finished_at_once(self, resource_uri: str, checkpoint_id: str | None, now: float) -> None:
        """A POST was answered 200/204 (done at once)."""
        if checkpoint_id is not None:
            self.remove(resource_uri, checkpoint_id, None, now)

    def remove(self, resource_uri: str, checkpoint_id: str, operation_id: str | None, when: float) -> bool:
        """Remove a checkpoint of a defined instance (logged as a :class:`Deletion`); False if absent."""
        with self._lock:
            inst = self._instances.get(norm_resource(resource_uri))
            if inst is None:
                return False
            for i, c in enumerate(inst.checkpoints):
                if c.id == checkpoint_id:
                    del inst.checkpoints[i]  # its child now descends from its parent (a merge)
                    self.deletions.append(Deletion(inst.resource_uri, checkpoint_id, operation_id, when))
                    return True
            return False

    def settle(self, resource_uri: str, now: float) -> Operation | None:
        """Complete every operation of the VM that is due by time; the first one still running, if any."""
        key = norm_resource(resource_uri)
        with self._lock:
            running = []
            for op in self._running.get(key, []):
                due = op.due_at
                if not op.done and due is not None and due <= now:
                    op.completed_at = due
                    self.completed(op)
                if not op.done:
                    running.append(op)
            if key in self._running:
                self._running[key] = running
            return running[0] if running else None

    # ---- the HTTP side ---------------------------------------------------------------------------
    def check_submit(
        self, resource_uri: str, checkpoint_id: str | None, one_job_per_vm: bool, now: float
    ) -> Reply | None:
        """Refusal of a deleteCheckpoint POST by the VM's state (404 / 409), or None to go on.

        Call it holding the lock, and start the operation under the same hold."""
        with self._lock:
            inst = self._instances.get(norm_resource(resource_uri))
            if inst is None and not one_job_per_vm:
                return None
            busy = self.settle(resource_uri, now)
            if busy is not None:
                self.overlaps += 1
            if inst is not None and checkpoint_id is not None and checkpoint_id not in (c.id for c in inst.checkpoints):
                return Reply.error(
                    404,
                    "NotFound",
                    f"The checkpoint '{checkpoint_id}' was not found on the virtual machine instance "
                    f"'{inst.resource_uri}'.",
                    checkpoint_id,
                )
            if one_job_per_vm and busy is not None:
                return Reply.error(
                    409,
                    "Conflict",
                    f"The VM is busy with another job (operation {busy.id}). Try the operation again later.",
                    resource_uri,
                )
            return None

    def next_fault(self, resource_uri: str, scenario: Scenario) -> Fault | None:
        """The next of ``scenario.instance_faults`` for this resourceUri (each given once)."""
        key = norm_resource(resource_uri)
        with self._lock:
            owner, idx = self._fault_progress.get(key, (scenario, 0))
            if owner is not scenario:  # re-scripted: start its faults afresh
                idx = 0
            if idx >= len(scenario.instance_faults):
                return None
            self._fault_progress[key] = (scenario, idx + 1)
            return scenario.instance_faults[idx]

    def answer_get(self, resource_uri: str, scenario: Scenario, now: float) -> Reply:
        """The answer to a checked, admitted instance GET: its next scripted fault, or :meth:`get_reply`
        (slowed or lost by a fault that lets it be processed)."""
        fault = self.next_fault(resource_uri, scenario)
        if fault_stops(fault):
            return fault_reply(fault, scenario, resource_uri)
        return after_fault(self.get_reply(resource_uri, now), fault)

    def get_reply(self, resource_uri: str, now: float) -> Reply:
        """The answer to the instance GET, after settling the VM's due operations."""
        with self._lock:
            inst = self._instances.get(norm_resource(resource_uri))
            if inst is None:
                parts = resource_uri.strip("/").split("/")
                group = parts[3] if len(parts) > 3 and parts[2].lower() == "resourcegroups" else "-"
                return Reply.error(
                    404,
                    "ResourceNotFound",
                    f"The Resource '{INSTANCE_TYPE}/default' under resource group '{group}' was not found.",
                    resource_uri,
                )
            self.settle(resource_uri, now)
            return Reply.json(200, self.body(inst))

    @staticmethod
    def body(inst: _Instance) -> dict:
        """The instance as the spec's ``VirtualMachineInstance`` shapes it."""
        parts = inst.resource_uri.strip("/").split("/")
        sub = parts[1] if len(parts) > 1 else "00000000-0000-0000-0000-000000000000"
        group = parts[3] if len(parts) > 3 else "rg"
        checkpoints = []
        parent = None
        for c in inst.checkpoints:
            item = {"checkpointID": c.id, "name": c.name, "description": c.description}
            if parent is not None:
                item["parentCheckpointID"] = parent
            checkpoints.append(item)
            parent = c.id
        return {
            "id": f"{inst.resource_uri}/providers/{INSTANCE_TYPE}/default",
            "name": "default",
            "type": INSTANCE_TYPE,
            "extendedLocation": {
                "type": "customLocation",
                "name": f"/subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.ExtendedLocation/customLocations/local",
            },
            "properties": {
                "infrastructureProfile": {
                    "vmName": parts[-1],
                    "checkpointType": "Production",
                    "checkpoints": checkpoints,
                },
                "powerState": "Running",
                "provisioningState": "Succeeded",
            },
        }
