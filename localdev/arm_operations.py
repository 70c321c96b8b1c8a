"""The long-running-operation decisions of the ARM emulator: what a checked deleteCheckpoint POST
gets (a scripted fault, a 409 or 404 of the VM instance, done at once, or 202 with a new operation's
status URLs) and what each status GET of an operation gets (still running, done, failed,
canceled), as its :class:`~localdev.arm_scenario.Scenario` scripts it.

Status URLs (``api-version`` as the emulator's)::

    {base}/providers/Microsoft.ScVmm/locations/<location>/operationResults/<opid>[.<step>]
    {base}/providers/Microsoft.ScVmm/locations/<location>/operationStatuses/<opid>

``operationResults`` is the ``Location`` protocol (202 while running, then 200/204 or an
ErrorResponse); ``operationStatuses`` the ``Azure-AsyncOperation`` one (always 200 with a status).
A ``.<step>`` URL exists once a scenario with ``new_location_each_poll`` has handed it out.
"""

from __future__ import annotations

import re
import threading
import time
import uuid

from localdev.arm_common import Reply, full_error, iso, norm_resource
from localdev.arm_instances import VmInstances
from localdev.arm_records import Operation, RecordedRequest, StatusCall
from localdev.arm_scenario import Fault, Scenario, add_retry_after, after_fault, fault_reply, fault_stops

__all__ = ["STATUS_PATH", "Operations"]

STATUS_PATH = re.compile(
    r"^/providers/Microsoft\.ScVmm/locations/(?P<loc>[^/]+)/(?P<kind>operationResults|operationStatuses)"
    r"/(?P<opid>[0-9a-f-]{36})(?:\.(?P<step>\d+))?$",
    re.IGNORECASE,
)


class Operations:
    """The operations started by 202 answers (by id), and how far each (resourceUri, checkpoint)
    has got through its scenario's ``submit_faults``."""

    def __init__(self, lock: threading.RLock, instances: VmInstances, location_name: str, api_version: str) -> None:
        self._lock = lock
        self._instances = instances
        self.location_name = location_name
        self.api_version = api_version
        self.by_id: dict[str, Operation] = {}
        self._submit_progress: dict[tuple, tuple[Scenario, int]] = {}

    def clear(self) -> None:
        """Forget submit-fault progress (operations stay)."""
        with self._lock:
            self._submit_progress.clear()

    def forget(self) -> None:
        with self._lock:
            self.by_id.clear()

    def all(self) -> list[Operation]:
        with self._lock:
            return list(self.by_id.values())

    def get(self, opid: str) -> Operation:
        with self._lock:
            return self.by_id[opid]

    def matching(self, key: str) -> list[Operation]:
        """Operations whose checkpoint id equals ``key`` or whose resourceUri matches it."""
        norm = norm_resource(key)
        with self._lock:
            return [
                op for op in self.by_id.values() if op.checkpoint_id == key or norm_resource(op.resource_uri) == norm
            ]

    # ---- POST ------------------------------------------------------------------------------
    def submit(
        self, resource_uri: str, checkpoint_id: str | None, scenario: Scenario, endpoint: str, one_job_per_vm: bool
    ) -> Reply:
        """The answer to a checked, admitted POST."""
        with self._lock:
            ident = (norm_resource(resource_uri), checkpoint_id)
            owner, idx = self._submit_progress.get(ident, (scenario, 0))
            if owner is not scenario:  # re-scripted: start its faults afresh
                idx = 0
            fault = scenario.submit_faults[idx] if idx < len(scenario.submit_faults) else None
            if fault is not None:
                self._submit_progress[ident] = (scenario, idx + 1)
        if fault_stops(fault):
            return fault_reply(fault, scenario, resource_uri)

        answer = scenario.submit
        with self._lock:  # the VM's state is checked and changed in one step
            now = time.time()
            refusal = self._instances.check_submit(resource_uri, checkpoint_id, one_job_per_vm, now)
            if refusal:
                reply = refusal
            elif isinstance(answer, Fault):
                reply = fault_reply(answer, scenario, resource_uri)
            elif answer in ("done_200", "done_204"):
                self._instances.finished_at_once(resource_uri, checkpoint_id, now)
                reply = Reply(status=200 if answer == "done_200" else 204)
            else:
                op = self._new(resource_uri, checkpoint_id, scenario, answer == "accepted_async", endpoint)
                reply = Reply(status=202, operation_id=op.id)
                reply.headers.append(("Location", op.location_url))
                if op.async_url:
                    reply.headers.append(("Azure-AsyncOperation", op.async_url))
                add_retry_after(reply, scenario.retry_after, scenario)
        return after_fault(reply, fault)

    def _new(
        self, resource_uri: str, checkpoint_id: str | None, scenario: Scenario, async_: bool, endpoint: str
    ) -> Operation:
        opid = str(uuid.uuid4())
        base = (scenario.location_base or endpoint).rstrip("/")
        prefix = f"{base}/providers/Microsoft.ScVmm/locations/{self.location_name}"
        location = f"{prefix}/operationResults/{opid}?api-version={self.api_version}"
        async_url = f"{prefix}/operationStatuses/{opid}?api-version={self.api_version}" if async_ else None
        op = Operation(
            id=opid,
            resource_uri=resource_uri,
            checkpoint_id=checkpoint_id,
            protocol="async" if async_ else "location",
            created=time.time(),
            location_url=location,
            async_url=async_url,
            scenario=scenario,
            location_urls=[location],
        )
        op._valid_targets.add(("operationresults", None))
        if async_:
            op._valid_targets.add(("operationstatuses", None))
        with self._lock:
            self.by_id[opid] = op
            self._instances.started(op)
        return op

    # ---- status GET ------------------------------------------------------------------------
    def find(self, m: re.Match, path: str) -> tuple[Operation | None, str]:
        """The operation a :data:`STATUS_PATH` match names, or None and why not."""
        opid = m.group("opid").lower()
        with self._lock:
            op = self.by_id.get(opid)
        if op is None or m.group("loc").lower() != self.location_name.lower():
            return None, f"No operation '{opid}'."
        if (m.group("kind").lower(), m.group("step")) not in op._valid_targets:
            return None, f"The status URL '{path}' was never handed out."
        return op, ""

    def status(self, op: Operation, rec: RecordedRequest, is_async: bool) -> Reply:
        """The answer to a checked, admitted status GET, recorded in ``op.calls``."""
        scenario = op.scenario
        now = time.time()
        with self._lock:
            op.polls += 1
            if is_async:
                op.async_polls += 1
            else:
                op.location_polls += 1
            fault = None
            if op._fault_index < len(scenario.poll_faults):
                fault = scenario.poll_faults[op._fault_index]
                op._fault_index += 1
            call = StatusCall("async" if is_async else "location", rec.target, None, now)
            op.calls.append(call)
        if fault_stops(fault):
            reply = fault_reply(fault, scenario, op.resource_uri)
        else:
            reply = after_fault(self._answer(op, scenario, is_async, now), fault)
        reply.operation_id = op.id
        call.status = None if reply.drop else reply.status
        return reply

    def _answer(self, op: Operation, scenario: Scenario, is_async: bool, now: float) -> Reply:
        with self._lock:
            if not op.done:
                if op.running_answers >= scenario.done_after_polls and now - op.created >= scenario.done_after_seconds:
                    op.completed_at = now
                    self._instances.completed(op)
                else:
                    op.running_answers += 1
            done = op.done
            new_location = None
            if not done and not is_async and scenario.new_location_each_poll:
                step = len(op.location_urls)
                base = op.location_url.split("/providers/", 1)[0]
                new_location = (
                    f"{base}/providers/Microsoft.ScVmm/locations/{self.location_name}/operationResults/"
                    f"{op.id}.{step}?api-version={self.api_version}"
                )
                op._valid_targets.add(("operationresults", str(step)))
                op.location_urls.append(new_location)
                op.location_url = new_location

        if not done:
            if is_async:
                reply = Reply.json(
                    200, {"id": op.async_url, "name": op.id, "status": "InProgress", "startTime": iso(op.created)}
                )
            else:
                reply = Reply(status=202)
                if new_location:
                    reply.headers.append(("Location", new_location))
            add_retry_after(reply, scenario.retry_after, scenario)
            return reply
        return self._final(op, scenario, is_async, now)

    @staticmethod
    def _final(op: Operation, scenario: Scenario, is_async: bool, now: float) -> Reply:
        final = scenario.final
        if isinstance(final, Fault):
            return fault_reply(final, scenario, op.resource_uri)
        end = iso(op.completed_at or now)

        def async_status(status: str, error: dict | None = None) -> Reply:
            body = {"id": op.async_url, "name": op.id, "status": status, "startTime": iso(op.created), "endTime": end}
            return Reply.json(200, {**body, **(error or {})})

        if final == "Failed":
            err = full_error(
                scenario.error
                or {"code": "CheckpointDeleteFailed", "message": "The checkpoint could not be deleted (emulated)."},
                op.resource_uri,
            )
            return async_status("Failed", err) if is_async else Reply.json(400, err)
        if final == "Canceled":
            if is_async:
                return async_status("Canceled", full_error(scenario.error, op.resource_uri) if scenario.error else None)
            err = scenario.error or {"code": "OperationCanceled", "message": "The operation was canceled (emulated)."}
            return Reply.json(400, full_error(err, op.resource_uri))
        if is_async:
            return async_status("Succeeded")
        return Reply(status=204 if final == "204" else 200)
