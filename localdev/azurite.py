"""Start and stop a private Azurite queue service on 127.0.0.1 for local runs and tests.

The emulator comes from the repo's own npm package (``npm ci`` in the repo root installs it as
``node_modules/.bin/azurite-queue``). Each :class:`Azurite` listens on its own free loopback
port, keeps its data in memory only and is stopped by process id::

    with Azurite() as azurite:
        client = QueueServiceClient.from_connection_string(azurite.connection_string)

Azurite's receive gets slow on a deep queue, so tests should use unique, shallow queues.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite-queue"

ACCOUNT_NAME = "devstoreaccount1"
# Azurite's documented, public development account key (not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
HOST = "127.0.0.1"


class AzuriteError(RuntimeError):
    """Azurite could not be started (missing package, early exit, or no answer in time)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.25):
            return True
    except OSError:
        return False


class Azurite:
    """A private Azurite queue service (``azurite-queue``) on a free 127.0.0.1 port."""

    def __init__(
        self,
        *,
        binary: Path | str | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.binary = Path(binary) if binary else AZURITE_BIN
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._workdir: str | None = None
        self._log_path: str | None = None

    # -- properties ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise AzuriteError("Azurite is not running: call start() first")
        return self._port

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise AzuriteError("Azurite is not running: call start() first")
        return self._proc.pid

    @property
    def queue_endpoint(self) -> str:
        return f"http://{HOST}:{self.port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={ACCOUNT_NAME};"
            f"AccountKey={ACCOUNT_KEY};"
            f"QueueEndpoint={self.queue_endpoint};"
        )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Azurite:
        if self.running:
            return self
        if not (self.binary.exists() and os.access(self.binary, os.X_OK)):
            raise AzuriteError(
                f"{self.binary} was not found. The Azurite emulator is an npm package of this repo: "
                f"run `npm ci` in {REPO_ROOT} (Node.js 20+ needed) and try again."
            )
        # Azurite refuses --location together with --inMemoryPersistence, and then keeps its
        # (few) files in the working directory: a fresh temporary one, removed on stop.
        self._workdir = tempfile.mkdtemp(prefix="azurite-")
        self._log_path = os.path.join(self._workdir, "azurite.log")
        last_error = ""
        for _attempt in range(3):  # a port taken between choosing and binding: pick another
            port = _free_port()
            with open(self._log_path, "wb") as log:
                self._proc = subprocess.Popen(
                    [
                        str(self.binary),
                        "--queueHost",
                        HOST,
                        "--queuePort",
                        str(port),
                        "--skipApiVersionCheck",
                        "--disableTelemetry",
                        "--inMemoryPersistence",
                        "--silent",
                        "--loose",
                    ],
                    cwd=self._workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a terminal's Ctrl-C goes to us; we stop it by pid
                )
            self._port = port
            _LIVE.add(self._proc)
            deadline = time.monotonic() + self.start_timeout
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                # Ready when the port answers and Azurite itself says it listens there (not some
                # other process that took the port between our choosing and its binding).
                if _port_answers(port) and f":{port}" in self._read_log() and self._proc.poll() is None:
                    return self
                time.sleep(0.05)
            last_error = self._read_log()
            exited = self._proc.poll() is not None
            self._kill()
            if not exited:
                self._cleanup_dir()
                raise AzuriteError(
                    f"Azurite did not answer on {HOST}:{port} within {self.start_timeout:.0f} s. "
                    f"If node_modules is missing or stale, run `npm ci` in {REPO_ROOT}. Output:\n{last_error}"
                )
            if "EADDRINUSE" not in last_error:
                break
        self._cleanup_dir()
        raise AzuriteError(
            f"Azurite exited during start-up. If node_modules is missing or stale, run `npm ci` in "
            f"{REPO_ROOT}. Output:\n{last_error}"
        )

    def stop(self) -> None:
        self._kill()
        self._cleanup_dir()

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------------
    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        self._port = None
        if proc is not None:
            _terminate(proc, self.stop_timeout)

    def _read_log(self) -> str:
        try:
            with open(self._log_path or "", encoding="utf-8", errors="replace") as log:
                return log.read()[-4000:]
        except OSError:
            return ""

    def _cleanup_dir(self) -> None:
        workdir, self._workdir = self._workdir, None
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def _terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Terminate one process by its id, then kill it if it outlives the grace period."""
    try:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=grace)
    finally:
        _LIVE.discard(proc)


# Every Azurite process this interpreter started and has not stopped yet; stopped at exit.
_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _stop_all_at_exit() -> None:
    for proc in list(_LIVE):
        _terminate(proc, 2.0)
