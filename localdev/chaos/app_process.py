"""The function app under test, in its own process: ``python -m localdev.functions_host`` with the run's
settings, killed by process id (SIGKILL, as a crash) and started again at once.

The host gets a copy of host.json with shorter queue timings than production, so that messages
held by a killed host come back within the run: ``processingVisibilityTimeout`` (how long a
received message stays invisible while its function runs) and ``visibilityTimeout`` (the pause
before a failed delivery is retried).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Settings of the outer environment that would point the app elsewhere than the stand-ins.
_FOREIGN = (
    "AZURE_CLIENT_ID",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "CURL_CA_BUNDLE",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "POLL_FAILURE_WINDOW_SECONDS",
    "OPERATION_TIMEOUT_SECONDS",
)


def short_host_json(app_dir: Path, processing_visibility: int, visibility: int) -> dict:
    """The app's host.json with the local host's queue timings shortened (seconds)."""
    data = json.loads((app_dir / "host.json").read_text(encoding="utf-8"))
    data["processingVisibilityTimeout"] = _timespan(processing_visibility)
    data.setdefault("extensions", {}).setdefault("queues", {})["visibilityTimeout"] = _timespan(visibility)
    return data


def _timespan(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class AppProcess:
    """Starts, kills and restarts ``python -m localdev.functions_host`` for the app in ``app_dir``."""

    def __init__(self, app_dir: Path, run_dir: Path, settings: dict[str, str], host_json: dict) -> None:
        self.app_dir = app_dir
        self.run_dir = run_dir
        self.settings = settings
        self.log_path = run_dir / "host.log"
        self.host_json_path = run_dir / "host.json"
        self.settings_path = run_dir / "local.settings.json"
        self.host_json_path.write_text(json.dumps(host_json, indent=2) + "\n", encoding="utf-8")
        values = {"FUNCTIONS_WORKER_RUNTIME": "python", **settings}
        self.settings_path.write_text(json.dumps({"IsEncrypted": False, "Values": values}, indent=2) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self.starts = 0
        self.kills = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            env = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
            env.update(self.settings)  # the environment wins over the settings file: set both
            env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
            env["PYTHONUNBUFFERED"] = "1"
            command = [
                sys.executable,
                "-m",
                "localdev.functions_host",
                "--app-dir",
                str(self.app_dir),
                "--settings",
                str(self.settings_path),
                "--host-json",
                str(self.host_json_path),
            ]
            with open(self.log_path, "ab") as log:
                log.write(f"\n--- chaos: host process start #{self.starts + 1} at {time.time():.3f} ---\n".encode())
                log.flush()
                self._proc = subprocess.Popen(
                    command,
                    cwd=ROOT,  # localdev comes from here, the app's own packages from app_dir
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a terminal's Ctrl-C reaches the run, not the host
                )
            _LIVE.add(self._proc)
            self.starts += 1

    def kill(self) -> None:
        """SIGKILL by process id, as a crash: nothing in flight is finished or released."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None:
                return
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                self.kills += 1
            proc.wait(timeout=10)
            _LIVE.discard(proc)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM (the host lets running invocations end), SIGKILL after ``grace`` seconds."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        finally:
            _LIVE.discard(proc)

    def exited_by_itself(self) -> int | None:
        """The exit code when the host ended without being killed (a start-up failure), else None."""
        with self._lock:
            return None if self._proc is None else self._proc.poll()

    def count_in_log(self, text: str) -> int:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return sum(line.count(text) for line in log)
        except OSError:
            return 0


_LIVE: set[subprocess.Popen[bytes]] = set()


def stop_all() -> None:
    """Kill every host process still running (an interrupted run)."""
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        _LIVE.discard(proc)
