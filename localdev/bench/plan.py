"""The workload of a benchmark run: N deletions spread over S subscriptions, and how the ARM
emulator is scripted to answer them (every operation lasts D seconds, every 202 says
``Retry-After: R``, every answer takes L seconds more)."""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from localdev.arm_chaos import Chaos
from localdev.arm_scenario import Scenario

CONTENDERS = ("ideal", "sdk-sync", "sdk-aio", "app", "noop-host")
CLIENTS = ("ideal", "sdk-sync", "sdk-aio")  # contenders that call ARM themselves
HOSTED = ("app", "noop-host")  # contenders fed through the requests queue by the local host
FLOOR = "ideal"

ARM_WRITES = (200, 10.0)  # ARM's bucket per subscription and principal: capacity, refill per second
ARM_READS = (250, 25.0)


@dataclass(frozen=True)
class Workload:
    count: int = 2000
    duration: float = 3.0  # D: seconds an operation runs after its POST
    retry_after: int = 1  # R: the Retry-After of every 202
    latency: float = 0.002  # L: seconds added to every answer of the emulator
    subscriptions: int = 20  # S
    one_subscription: bool = False
    throttle: bool = False  # the emulator enforces ARM's buckets per subscription

    @property
    def subscription_count(self) -> int:
        return 1 if self.one_subscription else max(1, min(self.subscriptions, self.count))

    @property
    def polls_due(self) -> int:
        """Status GETs one deletion needs when each waits exactly for the Retry-After before it:
        the k-th arrives after k*R seconds (and a little more), so the first with k*R >= D finds
        the operation done."""
        if self.retry_after <= 0:
            raise ValueError("retry_after must be at least 1 second")
        return max(1, math.ceil(self.duration / self.retry_after - 1e-9))

    def to_dict(self) -> dict:
        return {**asdict(self), "subscription_count": self.subscription_count, "polls_due": self.polls_due}


@dataclass(frozen=True)
class Item:
    """One deletion: the request the app gets, and what the clients send."""

    index: int
    request_id: str
    resource_uri: str
    checkpoint_id: str

    def message(self) -> str:
        """The deletion request as a producer puts it on the requests queue."""
        return json.dumps(
            {"resourceUri": self.resource_uri, "checkpointId": self.checkpoint_id, "requestId": self.request_id}
        )


def items(workload: Workload, tag: str) -> list[Item]:
    """``workload.count`` deletions, round robin over the subscriptions, one VM each."""
    subs = [str(uuid.uuid4()) for _ in range(workload.subscription_count)]  # no two runs share a bucket
    out = []
    for i in range(workload.count):
        sub = subs[i % len(subs)]
        uri = (
            f"/subscriptions/{sub}/resourceGroups/bench-rg/providers/Microsoft.HybridCompute/machines/vm-{tag}-{i:05d}"
        )
        out.append(Item(i, f"bench-{tag}-{i:05d}", uri, f"checkpoint-{i:05d}"))
    return out


def scenario(workload: Workload) -> Scenario:
    """Every POST: 202 with Location and ``Retry-After: R``; the operation ends D seconds after it
    (status GETs answer 202 + ``Retry-After: R`` until then, then 200)."""
    return Scenario(retry_after=workload.retry_after, done_after_seconds=workload.duration, final="200")


def latency(workload: Workload) -> Chaos | None:
    """The emulator's chaos, set to one kind of fault only: every call it processes is answered
    L seconds late (a 429 of the throttle buckets is answered at once)."""
    if workload.latency <= 0:
        return None
    return Chaos(
        seed=0,
        error_rate=0.0,
        throttle_rate=0.0,
        slow_rate=1.0,
        slow_seconds=workload.latency,
        reset_rate=0.0,
        lost_rate=0.0,
    )


def write_items(path: Path, deletions: list[Item]) -> None:
    path.write_text(json.dumps([asdict(i) for i in deletions]), encoding="utf-8")


def read_items(path: Path) -> list[Item]:
    return [Item(**d) for d in json.loads(path.read_text(encoding="utf-8"))]
