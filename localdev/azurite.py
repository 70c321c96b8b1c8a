"""Start and stop a private Azurite (queue and table services) on 127.0.0.1 for local runs and tests.

The emulator comes from the repo's own npm package (``npm ci`` in the repo root installs it as
``node_modules/.bin/azurite``). Each :class:`Azurite` listens on its own free loopback ports (one
per service: queues, tables, and blobs, which the app does not use but Azurite always serves)
and is stopped by process id::

    with Azurite() as azurite:
        client = QueueServiceClient.from_connection_string(azurite.connection_string)

By default it keeps its data in memory only. Given ``persist_dir``, it keeps every queue and
message in that folder instead (``--location``), so that a stop and a start on the same folder,
or :meth:`Azurite.restart`, find them again; a restart keeps the port when it is still free, so
clients keep their connection string::

    azurite = Azurite(persist_dir="run/azurite").start()
    azurite.restart(kill=True)   # SIGKILL, as a crash, then start again on the same port

Azurite writes its database to disk every 5 seconds and on a graceful stop (SIGTERM), so a
SIGKILL forgets the changes of the last few seconds. ``restart(kill=True, durable=True)`` waits for
the next save before the SIGKILL, which keeps what clients were told is stored (see
:meth:`Azurite.kill`).

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
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite"

ACCOUNT_NAME = "devstoreaccount1"
# Azurite's documented, public development account key (not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
HOST = "127.0.0.1"
# Azurite's queue database files (LokiJS, saved every 5 s and on a graceful stop).
DATABASE_FILES = ("__azurite_db_queue__.json", "__azurite_db_queue_extent__.json")


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
    """A private Azurite (``azurite``: queues, tables, blobs) on free 127.0.0.1 ports.

    :param persist_dir: keep queues and messages in this folder (created if missing, never
        removed) instead of in memory; its log is appended to ``azurite.log`` there.
    """

    def __init__(
        self,
        *,
        binary: Path | str | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        persist_dir: Path | str | None = None,
    ) -> None:
        self.binary = Path(binary) if binary else AZURITE_BIN
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.persist_dir = Path(persist_dir).resolve() if persist_dir else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._table_port: int | None = None
        self._workdir: str | None = None
        self._log_path: str | None = None
        self._log_offset = 0

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
    def table_port(self) -> int:
        if self._table_port is None:
            raise AzuriteError("Azurite is not running: call start() first")
        return self._table_port

    @property
    def table_endpoint(self) -> str:
        return f"http://{HOST}:{self.table_port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={ACCOUNT_NAME};"
            f"AccountKey={ACCOUNT_KEY};"
            f"QueueEndpoint={self.queue_endpoint};"
            f"TableEndpoint={self.table_endpoint};"
        )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, port: int | None = None, table_port: int | None = None) -> Azurite:
        """Start Azurite; its queues on ``port`` and tables on ``table_port`` when given and free,
        else on free ports."""
        if self.running:
            return self
        if not (self.binary.exists() and os.access(self.binary, os.X_OK)):
            raise AzuriteError(
                f"{self.binary} was not found. The Azurite emulator is an npm package of this repo: "
                f"run `npm ci` in {REPO_ROOT} (Node.js 20+ needed) and try again."
            )
        if self.persist_dir is not None:
            self.persist_dir.mkdir(parents=True, exist_ok=True)
            workdir = str(self.persist_dir)
            storage = ["--location", workdir]
        else:
            # Azurite refuses --location together with --inMemoryPersistence, and then keeps its
            # (few) files in the working directory: a fresh temporary one, removed on stop.
            self._workdir = workdir = tempfile.mkdtemp(prefix="azurite-")
            storage = ["--inMemoryPersistence"]
        self._log_path = os.path.join(workdir, "azurite.log")
        last_error = ""
        for attempt in range(3):  # a port taken between choosing and binding: pick another
            chosen = port if (port is not None and attempt == 0) else _free_port()
            tables = table_port if (table_port is not None and attempt == 0) else _free_port()
            with open(self._log_path, "ab") as log:
                self._log_offset = log.tell()
                self._proc = subprocess.Popen(
                    [
                        str(self.binary),
                        "--queueHost",
                        HOST,
                        "--queuePort",
                        str(chosen),
                        "--tableHost",
                        HOST,
                        "--tablePort",
                        str(tables),
                        "--blobHost",
                        HOST,
                        "--blobPort",
                        "0",  # Azurite picks a free one; nothing here uses blobs
                        "--skipApiVersionCheck",
                        "--disableTelemetry",
                        *storage,
                        "--silent",
                        "--loose",
                    ],
                    cwd=workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a terminal's Ctrl-C goes to us; we stop it by pid
                )
            self._port, self._table_port = chosen, tables
            _LIVE.add(self._proc)
            deadline = time.monotonic() + self.start_timeout
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                # Ready when the port answers and Azurite itself says it listens there (not some
                # other process that took the port between our choosing and its binding).
                log = self._read_log()
                listening = all(_port_answers(p) and f":{p}" in log for p in (chosen, tables))
                if listening and self._proc.poll() is None:
                    return self
                time.sleep(0.05)
            last_error = self._read_log()
            exited = self._proc.poll() is not None
            self._end(force=True)
            if not exited:
                self._cleanup_dir()
                raise AzuriteError(
                    f"Azurite did not answer on {HOST}:{chosen} and :{tables} within {self.start_timeout:.0f} s. "
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
        """Stop gracefully (SIGTERM: Azurite saves its database), SIGKILL after ``stop_timeout``."""
        self._end(force=False)
        self._cleanup_dir()

    def kill(self, *, durable: bool = False) -> None:
        """SIGKILL at once, as a crash. In-memory data is gone; a ``persist_dir`` keeps what
        Azurite last saved (it saves every 5 s). ``durable=True`` waits (at most 10 s) for its next
        save and kills right after it, so that only the writes of those few milliseconds can be
        lost, as close to a durable store that crashes as Azurite gets."""
        if durable and self.persist_dir is not None and self.running:
            self._wait_for_save(10.0)
        self._end(force=True)
        self._cleanup_dir()

    def restart(self, *, kill: bool = False, durable: bool = False) -> Azurite:
        """Stop (or :meth:`kill`) and start again, on the same port when it is still free.

        With ``persist_dir`` every queue and message saved before the stop is there again."""
        port, table_port = self._port, self._table_port
        if kill:
            self.kill(durable=durable)
        else:
            self.stop()
        return self.start(port=port, table_port=table_port)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------------
    def _end(self, force: bool) -> None:
        proc, self._proc = self._proc, None
        self._port = self._table_port = None
        if proc is not None:
            _terminate(proc, 0.0 if force else self.stop_timeout)

    def _wait_for_save(self, limit: float) -> None:
        """Return right after Azurite saved its queue database and then its extent database (the
        message texts' index; it saves some milliseconds after the queue database, so every
        message saved has its text's place saved too)."""
        assert self.persist_dir is not None
        queue_db, extent_db = (self.persist_dir / name for name in DATABASE_FILES)

        def stamp(path: Path) -> int:
            try:
                return path.stat().st_mtime_ns
            except OSError:
                return 0

        def changed(path: Path, before: int, seconds: float) -> bool:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if stamp(path) != before:
                    return True
                time.sleep(0.002)
            return False

        extent_before = stamp(extent_db)
        if changed(queue_db, stamp(queue_db), limit):
            changed(extent_db, extent_before, 1.0)

    def _read_log(self) -> str:
        try:
            with open(self._log_path or "", encoding="utf-8", errors="replace") as log:
                log.seek(self._log_offset)
                return log.read()[-4000:]
        except OSError:
            return ""

    def _cleanup_dir(self) -> None:
        workdir, self._workdir = self._workdir, None
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def _terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Terminate one process by its id (SIGKILL at once when ``grace`` is 0), killing it if it
    outlives the grace period."""
    try:
        if proc.poll() is None:
            if grace <= 0:
                proc.kill()
                proc.wait(timeout=5)
                return
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
