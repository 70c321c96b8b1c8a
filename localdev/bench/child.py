"""A contender's own process: ``python -m localdev.bench.child CONFIG``.

It loads what the contender needs (imports, clients, the local host) before it says ``ready``,
so that the start-up is not counted; on ``go`` (a line on stdin) it takes the process's CPU
times (``getrusage(RUSAGE_SELF)``: every thread of this process, and nothing else), does the
contender's work, and at the end reports the CPU spent between the two as one JSON line:

    child -> {"event": "ready"}
    parent -> go
    child -> {"event": "done", "started": ..., "ended": ..., "cpu_user": ..., "cpu_system": ..., ...}

A hosted contender (the app or the no-op app in the local host) has no end of its own: it runs
until the parent, which watches the events queue, sends ``stop``. Meanwhile it says how many
requests the host has handed to the app (``progress``, every 0.05 s), by which the parent keeps
the requests queue topped up; the no-op app says ``idle`` (with the time) once every request
was handed to it. Protocol lines go to the process's original
stdout; anything else that writes to stdout goes to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO


class Channel:
    """The protocol: JSON lines out, command lines in."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._out: TextIO = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        os.dup2(2, 1)  # stray prints (and libraries) must not break the protocol
        sys.stdout = sys.stderr

    def send(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}) + "\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()

    @staticmethod
    def expect(command: str) -> None:
        line = sys.stdin.readline()
        if line.strip() != command:
            raise SystemExit(f"bench child: expected {command!r} from the parent, got {line.strip()!r}")


class CpuWindow:
    """CPU of this process (all its threads) from :meth:`start` to :meth:`stop`."""

    def start(self) -> None:
        self.started = time.time()
        self._r0 = resource.getrusage(resource.RUSAGE_SELF)

    def stop(self) -> dict:
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "started": self.started,
            "cpu_user": r1.ru_utime - self._r0.ru_utime,
            "cpu_system": r1.ru_stime - self._r0.ru_stime,
            "voluntary_switches": r1.ru_nvcsw - self._r0.ru_nvcsw,
            "involuntary_switches": r1.ru_nivcsw - self._r0.ru_nivcsw,
        }


def log_to_file(config: dict, fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s") -> None:
    """The process's log records to ``config["log_file"]`` at ``config["log_level"]`` (INFO by
    default, as the Python worker takes them)."""
    logging.basicConfig(
        filename=config["log_file"], filemode="w", level=getattr(logging, config.get("log_level", "INFO")), format=fmt
    )


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    channel = Channel()
    contender = config["contender"]
    window = CpuWindow()
    if contender in ("app", "noop-host"):
        from localdev.bench import hosted

        hosted.run(contender, config, channel, window)
    else:
        from localdev.bench import clients

        clients.run(contender, config, channel, window)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
