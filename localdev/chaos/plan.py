"""What a chaos run asks for: VM instances and their checkpoints, the deletion requests, and how
the ARM emulator answers each one.

Requests spread over many VMs in a few subscriptions; a few VMs get 2..3 requests for different
checkpoints (with one job per VM, the later ones meet 409 while the first runs). Three kinds:

- ``succeeds``: the operation completes 1..3 s after it started, polled or not, as ARM's do (with
  ``Retry-After: 1`` that is 1..3 status reads), and its checkpoint is gone;
- ``fails``: the same, but the operation ends ``Failed`` and the checkpoint stays;
- ``gone``: the checkpoint is not in the VM instance any more (deleted earlier): ARM answers 404.
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from dataclasses import dataclass, field

from localdev.arm_emulator import ArmEmulator, Scenario

KINDS = ("succeeds", "fails", "gone")


@dataclass
class PlannedRequest:
    request_id: str
    resource_uri: str
    checkpoint_id: str
    kind: str  # one of KINDS
    base64: bool  # producers differ: half the messages are base64
    enqueued_at: float | None = None  # time.time() when the queue took the message

    def message(self) -> str:
        text = json.dumps(
            {
                "resourceUri": self.resource_uri,
                "checkpointId": self.checkpoint_id,
                "requestId": self.request_id,
                "correlationId": "chaos-run",
            }
        )
        return base64.b64encode(text.encode()).decode() if self.base64 else text


@dataclass
class Plan:
    requests: list[PlannedRequest]
    instances: dict[str, list[str]]  # resourceUri -> checkpoint ids, root first
    scenarios: dict[str, Scenario] = field(repr=False)  # checkpoint id -> how ARM answers it
    subscriptions: list[str] = field(default_factory=list)

    @property
    def by_id(self) -> dict[str, PlannedRequest]:
        return {r.request_id: r for r in self.requests}

    def vms_with_several_requests(self) -> int:
        per_vm: dict[str, int] = {}
        for r in self.requests:
            per_vm[r.resource_uri] = per_vm.get(r.resource_uri, 0) + 1
        return sum(1 for n in per_vm.values() if n > 1)

    def kind_counts(self) -> dict[str, int]:
        return {kind: sum(1 for r in self.requests if r.kind == kind) for kind in KINDS}

    def apply(self, arm: ArmEmulator) -> None:
        """Define every VM instance and script every checkpoint on the emulator."""
        for resource_uri, checkpoints in self.instances.items():
            arm.set_checkpoints(resource_uri, checkpoints)
        for checkpoint_id, scenario in self.scenarios.items():
            arm.script(checkpoint_id, scenario)


def make_plan(
    count: int,
    seed: int,
    *,
    subscriptions: int = 4,
    gone_rate: float = 0.02,
    fail_rate: float = 0.05,
    shared_vm_rate: float = 0.05,
) -> Plan:
    """``count`` requests; the same seed gives the same plan."""
    rng = random.Random(seed)

    def new_uuid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    subs = [new_uuid() for _ in range(subscriptions)]
    requests: list[PlannedRequest] = []
    instances: dict[str, list[str]] = {}
    scenarios: dict[str, Scenario] = {}
    vm = 0
    while len(requests) < count:
        on_this_vm = rng.randint(2, 3) if rng.random() < shared_vm_rate else 1
        on_this_vm = min(on_this_vm, count - len(requests))
        sub = subs[vm % len(subs)]
        resource_uri = (
            f"/subscriptions/{sub}/resourceGroups/chaos-rg-{vm % 7}"
            f"/providers/Microsoft.HybridCompute/machines/chaos-vm-{vm:05d}"
        )
        chain = [f"root-{new_uuid()}"]  # never asked for: an instance always has a checkpoint
        for _ in range(on_this_vm):
            index = len(requests)
            checkpoint_id = f"cp-{new_uuid()}"
            draw = rng.random()
            kind = "gone" if draw < gone_rate else "fails" if draw < gone_rate + fail_rate else "succeeds"
            if kind != "gone":
                chain.append(checkpoint_id)
                scenarios[checkpoint_id] = Scenario(
                    submit="accepted_async" if rng.random() < 0.25 else "accepted",
                    retry_after=1,
                    done_after_seconds=float(rng.randint(1, 3)),
                    final="Failed" if kind == "fails" else "Succeeded",
                )
            requests.append(PlannedRequest(f"chaos-{index:05d}", resource_uri, checkpoint_id, kind, index % 2 == 1))
        instances[resource_uri] = chain
        vm += 1
    rng.shuffle(requests)  # the requests of one VM arrive apart, in any order
    return Plan(requests, instances, scenarios, subs)
