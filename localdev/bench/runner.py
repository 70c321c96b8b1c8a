"""The parent of a benchmark run: the stand-ins (Azurite, the identity endpoint and the ARM
emulator, in this process or its child), then one child process per contender, one after the
other, each fed the same workload on fresh subscriptions and queues.

What a contender costs is read from its own process only: its CPU over the measured window as
the child reports it (``getrusage(RUSAGE_SELF)`` from ``go`` to its end), its whole life's CPU
and peak RSS from ``os.wait4`` when it exits. The emulator and the identity endpoint run in this
process and Azurite in its own, so neither is counted in a contender's figures. Their CPU over
the window is kept beside them: ``parent_cpu_s`` (this process: the emulator, the identity
endpoint, and for a hosted contender the feeding of its requests queue and the reading of its
events) and ``azurite_cpu_s``.
"""

from __future__ import annotations

import json
import os
import queue
import resource
import shutil
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from localdev.arm_emulator import ArmEmulator
from localdev.arm_records import Operation, RecordedRequest
from localdev.azurite import Azurite
from localdev.bench import plan, profile
from localdev.bench.feed import HostedQueues
from localdev.bench.plan import Item, Workload
from localdev.identity_endpoint import IdentityEndpoint

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 120.0
# Settings of the outer environment that would point a contender elsewhere than the stand-ins.
FOREIGN = (
    "AZURE_CLIENT_ID",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "EVENTGRID_TOPIC_ENDPOINT",
)


@dataclass
class Raw:
    """What one contender's run left: the child's report, its rusage, and the emulator's records."""

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


class Child:
    """A contender's process and its protocol (see :mod:`.child`)."""

    def __init__(self, config: dict, env: dict[str, str], run_dir: Path) -> None:
        name = config["contender"]
        config_path = run_dir / f"{name}.config.json"
        config_path.write_text(json.dumps(config), encoding="utf-8")
        self._stderr = open(run_dir / f"{name}.stderr.log", "wb")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "localdev.bench.child", str(config_path)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.lines: queue.Queue[dict | None] = queue.Queue()
        self.handled = 0  # requests the local host has handed over, as a hosted child reports
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for text in self.proc.stdout:
            try:
                line = json.loads(text)
            except ValueError:
                continue
            if line.get("event") == "progress":
                self.handled = int(line["handled"])
            else:
                self.lines.put(line)
        self.lines.put(None)

    def expect(self, event: str, timeout: float) -> dict | None:
        """The next protocol line, which must be `event`; None when the time runs out."""
        try:
            line = self.lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        if line is None or line.get("event") != event:
            raise RuntimeError(
                f"bench child {self.proc.args[-1]}: expected {event!r}, got {line!r} (see its stderr log)"
            )
        return line

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def wait(self, timeout: float = 60.0) -> dict:
        """Reap the child (killed after `timeout`) and return its rusage."""
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                self.proc.kill()
                deadline = float("inf")
            time.sleep(0.05)
        self._stderr.close()
        return {
            "cpu_user": usage.ru_utime,
            "cpu_system": usage.ru_stime,
            "max_rss_kb": usage.ru_maxrss,
            "exit_code": self.proc.returncode,
        }


def _azurite_cpu(pid: int) -> float | None:
    """CPU seconds of the Azurite process so far (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child_env(stand: StandIns, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN and not k.startswith("AzureWebJobs")}
    env.update(stand.identity.env())
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


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
    }
    hosted = name in plan.HOSTED
    queues = HostedQueues(stand.azurite.connection_string, name, deletions) if hosted else None
    env = child_env(stand, _app_settings(stand, queues.names) if queues else _trust(stand))
    child = Child(config, env, run_dir)
    timed_out = False
    outcomes: dict = {}
    try:
        if child.expect("ready", READY_TIMEOUT) is None:
            raise RuntimeError(f"bench child {name} did not get ready within {READY_TIMEOUT:.0f} s")
        if queues:
            queues.start_feeding(lambda: child.handled)
        cpu0, azurite0 = _self_cpu(), _azurite_cpu(stand.azurite.pid)
        started = time.time()
        child.send("go")
        spy_path = run_dir / f"{name}.pyspy.txt"
        spy = profile.start(child.proc.pid, spy_path) if name in options.get("profile", ()) else None
        deadline = time.monotonic() + options["timeout"]
        if name == "app":
            outcomes, ended, timed_out = queues.watch(deadline)
            child.send("stop")
        elif name == "noop-host":
            idle = child.expect("idle", deadline - time.monotonic())
            timed_out = idle is None
            ended = idle["ended"] if idle else time.time()
            outcomes = {"succeeded": idle["handled"] if idle else 0, "failed": 0}
            child.send("stop")
        report = child.expect("done", (deadline - time.monotonic()) + 60)
        if report is None:
            timed_out = True
            child.kill()
            report = {"ended": time.time(), "cpu_user": float("nan"), "cpu_system": float("nan"), "outcomes": {}}
        if not hosted:
            ended = report["ended"]
            outcomes = report["outcomes"]
        parent_cpu = _self_cpu() - cpu0
        azurite1 = _azurite_cpu(stand.azurite.pid)
    except BaseException:
        child.kill()
        child.wait()
        raise
    finally:
        if queues:
            queues.close()
    rusage = child.wait()
    sampled = profile.finish(spy, spy_path)
    records = stand.arm.requests()
    opids = {r.operation_id for r in records if r.operation_id}
    return Raw(
        contender=name,
        started=started,
        ended=ended,
        child=report,
        rusage=rusage,
        records=records,
        operations=[op for op in stand.arm.operations if op.id in opids],
        tokens=stand.identity.tokens_issued,
        connections=stand.arm.connections_opened,
        violations=list(stand.arm.violations),
        parent_cpu_s=parent_cpu,
        azurite_cpu_s=None if azurite0 is None or azurite1 is None else azurite1 - azurite0,
        outcomes=outcomes,
        timed_out=timed_out,
        profile=sampled,
    )


def _trust(stand: StandIns) -> dict[str, str]:
    """The emulator's CA as the process's trust store (OpenSSL's default paths, and requests')."""
    return {"SSL_CERT_FILE": stand.arm.ca_bundle_path, "REQUESTS_CA_BUNDLE": stand.arm.ca_bundle_path}


def _app_settings(stand: StandIns, queues: dict[str, str]) -> dict[str, str]:
    """The app settings, as demo.py sets them, with the poller's timer every second."""
    return {
        "AzureWebJobsStorage": stand.azurite.connection_string,
        **queues,
        "ARM_ENDPOINT": stand.arm.endpoint,
        "POLL_SCHEDULE": "* * * * * *",
        "REQUESTS_CA_BUNDLE": stand.arm.ca_bundle_path,
    }
