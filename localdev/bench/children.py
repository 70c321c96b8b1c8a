"""The parent's side of a benchmark child process (see :mod:`.child`): starting it with the
environment the stand-ins define, its line protocol, reaping it with its rusage, and what the
parent reads of processes it does not own (CPU and RSS from Linux /proc).

A contender that runs in several processes (``app`` with ``--app-processes K``) is measured as
one: :func:`combine` sums their CPU and RSS and keeps the largest RSS beside the sum.
"""

from __future__ import annotations

import json
import os
import queue
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

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
class Window:
    """What the children of one contender left over its measured window (see :class:`.runner.Raw`)."""

    started: float  # when "go" was sent (epoch seconds)
    ended: float  # when the last deletion's outcome was known
    child: dict  # the children's "done" reports, combined
    rusage: dict  # of the whole child processes (os.wait4), combined
    parent_cpu_s: float
    azurite_cpu_s: float | None
    outcomes: dict = field(default_factory=dict)
    timed_out: bool = False
    profile: dict | None = None
    processes: int = 1


class Child:
    """A child process and its protocol: ``python -m MODULE CONFIG``, JSON lines out, commands in.

    ``label`` names its files in `run_dir` (config, stderr log); the contender's name by default.
    """

    def __init__(
        self,
        config: dict,
        env: dict[str, str],
        run_dir: Path,
        label: str | None = None,
        module: str = "localdev.bench.child",
        args: tuple[str, ...] = (),
    ) -> None:
        label = label or config["contender"]
        config_path = run_dir / f"{label}.config.json"
        config_path.write_text(json.dumps(config), encoding="utf-8")
        self._stderr = open(run_dir / f"{label}.stderr.log", "wb")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args, str(config_path)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.lines: queue.Queue[dict | None] = queue.Queue()
        self.handled = 0  # requests the local host has handed over, as a hosted child reports
        self.latest: dict = {}  # the last "tick" line, if the child sends them
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
            elif line.get("event") == "tick":
                self.latest = line
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


def combine(reports: list[dict], rusages: list[dict]) -> tuple[dict, dict]:
    """The "done" reports and rusages of one contender's processes as those of one: CPU and RSS
    summed (``max_rss_kb_max`` keeps the largest process's), the last end, the first failing exit."""
    report = dict(reports[0])
    for key in ("cpu_user", "cpu_system", "voluntary_switches", "involuntary_switches"):
        if all(key in r for r in reports):
            report[key] = sum(r[key] for r in reports)
    report["ended"] = max(r["ended"] for r in reports)
    usage = {key: sum(u[key] for u in rusages) for key in ("cpu_user", "cpu_system", "max_rss_kb")}
    usage["max_rss_kb_max"] = max(u["max_rss_kb"] for u in rusages)
    usage["exit_code"] = next((u["exit_code"] for u in rusages if u["exit_code"] != 0), 0)
    return report, usage


def killed_report() -> dict:
    """The report of a child that never said "done" (it was killed)."""
    return {"ended": time.time(), "cpu_user": float("nan"), "cpu_system": float("nan"), "outcomes": {}}


def proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of process `pid` so far (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def proc_rss_mb(pid: int) -> float | None:
    """Resident set size of process `pid` now (VmRSS of /proc/PID/status), None elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def machine_cpu() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine so far, every CPU (Linux /proc/stat)."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    total = sum(ticks[:8])  # guest time is already in user
    return (total - idle) / hz, total / hz


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child_env(identity_env: dict[str, str], extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without what would point a child elsewhere than the stand-ins,
    with the identity endpoint's settings (`identity_env`) and `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN and not k.startswith("AzureWebJobs")}
    env.update(identity_env)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


def trust(ca_bundle_path: str) -> dict[str, str]:
    """The emulator's CA as the process's trust store (OpenSSL's default paths, and requests')."""
    return {"SSL_CERT_FILE": ca_bundle_path, "REQUESTS_CA_BUNDLE": ca_bundle_path}
