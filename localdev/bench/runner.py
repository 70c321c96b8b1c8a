"""The parent of a benchmark run: the stand-ins (Azurite, the identity endpoint and the ARM
emulator, in this process or its child), then one child process per contender (the app with
``--app-processes K``: K of them, see :mod:`.hosting`), one contender after the other, each fed
the same workload on fresh subscriptions and queues. The child processes themselves are
:mod:`.children`'s.

What a contender costs is read from its own process only: its CPU over the measured window as
the child reports it (``getrusage(RUSAGE_SELF)`` from ``go`` to its end), its whole life's CPU
and peak RSS from ``os.wait4`` when it exits. The emulator and the identity endpoint run in this
process and Azurite in its own, so neither is counted in a contender's figures. Their CPU over
the window is kept beside them: ``parent_cpu_s`` (this process: the emulator, the identity
endpoint, and for a hosted contender the feeding of its requests queue and the reading of its
events) and ``azurite_cpu_s``.
"""

from __future__ import annotations

import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from localdev.arm_emulator import ArmEmulator
from localdev.arm_records import Operation, RecordedRequest
from localdev.azurite import Azurite
from localdev.bench import hosting, plan, profile
from localdev.bench.children import READY_TIMEOUT, Child, Window, child_env, killed_report, proc_cpu, self_cpu, trust
from localdev.bench.plan import Item, Workload
from localdev.identity_endpoint import IdentityEndpoint


@dataclass
class Raw:
    """What one contender's run left: the child's report, its rusage, and the emulator's records
    (of several processes: their reports and rusages combined, see :func:`.children.combine`)."""

    contender: str
    started: float  # when "go" was sent (epoch seconds)
    ended: float  # when the last deletion's outcome was known
    child: dict  # the child's "done" report: CPU over the window, outcomes
    rusage: dict  # of the whole child process (os.wait4)
    records: list[RecordedRequest]
    operations: list[Operation]
    tokens: int
    connections: int
    violations: list[str]
    parent_cpu_s: float
    azurite_cpu_s: float | None
    outcomes: dict = field(default_factory=dict)
    timed_out: bool = False
    profile: dict | None = None
    processes: int = 1  # the contender's processes (app with --app-processes K)


class StandIns:
    """Azurite, the identity endpoint and the ARM emulator, scripted for the workload."""

    def __init__(self, workload: Workload, run_dir: Path) -> None:
        self.workload = workload
        self.run_dir = run_dir
        self._stack = ExitStack()

    def __enter__(self) -> StandIns:
        # Azurite keeps its data on disk: in memory it stopped answering for 10 to 35 s about once
        # a minute (its extent GC runs every minute) once a few thousand messages had come and
        # gone, and the app's storage calls timed out.
        store = self.run_dir / "azurite"
        shutil.rmtree(store, ignore_errors=True)
        self.azurite = self._stack.enter_context(Azurite(persist_dir=store))
        self.identity = self._stack.enter_context(IdentityEndpoint())
        self.arm = self._stack.enter_context(
            ArmEmulator(
                trustme.CA(),
                self.identity,
                throttle=self.workload.throttle,
            )
        )
        self.arm.default = plan.scenario(self.workload)
        self.arm.chaos = plan.latency(self.workload)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def reset(self) -> None:
        self.arm.clear()
        self.identity.reset_counts()


def run_contender(name: str, stand: StandIns, deletions: list[Item], run_dir: Path, options: dict) -> Raw:
    stand.reset()
    items_path = run_dir / f"{name}.items.json"
    plan.write_items(items_path, deletions)
    config = {
        "contender": name,
        "items": str(items_path),
        "count": len(deletions),
        "arm_endpoint": stand.arm.endpoint,
        "api_version": stand.arm.api_version,
        "ca_bundle": stand.arm.ca_bundle_path,
        "throttle": stand.workload.throttle,
        "sdk_threads": options["sdk_threads"],
        "log_file": str(run_dir / f"{name}.log"),
        "log_level": options["app_log_level"],
        "telemetry": options.get("telemetry", False),
    }
    if name in plan.HOSTED:
        window = hosting.run(name, stand, deletions, run_dir, config, options)
    else:
        window = _run_client(name, stand, run_dir, config, options)
    records = stand.arm.requests()
    opids = {r.operation_id for r in records if r.operation_id}
    return Raw(
        contender=hosting.label(name, window.processes),
        started=window.started,
        ended=window.ended,
        child=window.child,
        rusage=window.rusage,
        records=records,
        operations=[op for op in stand.arm.operations if op.id in opids],
        tokens=stand.identity.tokens_issued,
        connections=stand.arm.connections_opened,
        violations=list(stand.arm.violations),
        parent_cpu_s=window.parent_cpu_s,
        azurite_cpu_s=window.azurite_cpu_s,
        outcomes=window.outcomes,
        timed_out=window.timed_out,
        profile=window.profile,
        processes=window.processes,
    )


def _run_client(name: str, stand: StandIns, run_dir: Path, config: dict, options: dict) -> Window:
    """A contender that calls ARM itself: one child, from "go" to its last deletion's outcome."""
    child = Child(config, child_env(stand.identity.env(), trust(stand.arm.ca_bundle_path)), run_dir)
    timed_out = False
    try:
        if child.expect("ready", READY_TIMEOUT) is None:
            raise RuntimeError(f"bench child {name} did not get ready within {READY_TIMEOUT:.0f} s")
        cpu0, azurite0 = self_cpu(), proc_cpu(stand.azurite.pid)
        started = time.time()
        child.send("go")
        spy_path = run_dir / f"{name}.pyspy.txt"
        spy = profile.start(child.proc.pid, spy_path) if name in options.get("profile", ()) else None
        report = child.expect("done", options["timeout"] + 60)
        if report is None:
            timed_out = True
            child.kill()
            report = killed_report()
        parent_cpu = self_cpu() - cpu0
        azurite1 = proc_cpu(stand.azurite.pid)
    except BaseException:
        child.kill()
        child.wait()
        raise
    rusage = child.wait()
    return Window(
        started=started,
        ended=report["ended"],
        child=report,
        rusage=rusage,
        parent_cpu_s=parent_cpu,
        azurite_cpu_s=None if azurite0 is None or azurite1 is None else azurite1 - azurite0,
        outcomes=report["outcomes"],
        timed_out=timed_out,
        profile=profile.finish(spy, spy_path),
    )
