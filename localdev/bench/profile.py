"""``--profile CONTENDER``: py-spy samples that contender's process from ``go`` until it exits,
and the samples are summed up by function and by the part of the code they run in (the app's
``shared`` package, the local host, the Azure SDK, requests/urllib3, TLS, JSON, logging...).

py-spy is not a requirement of the project: install it into the virtualenv
(``.venv/bin/pip install py-spy``). Only the thread holding the GIL is sampled (``--gil``): the
shares tell where the process's Python CPU goes; a thread waiting for the GIL, a socket or a
lock is not counted, nor is C code that runs without the GIL (TLS, system calls).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

RATE = 200  # samples per second

# first match wins, tested against the frame's "function (path:line)" text, innermost frame first
AREAS = (
    ("TLS (ssl)", re.compile(r"\(ssl\.py:")),
    ("logging", re.compile(r"\(logging/")),
    ("JSON", re.compile(r"\(json/")),
    ("azure-storage-queue", re.compile(r"\(azure/storage/queue/")),
    ("azure-identity / msal", re.compile(r"\(azure/identity/|\(msal/")),
    ("azure-core", re.compile(r"\(azure/core/")),
    ("azure-functions", re.compile(r"\(azure/functions/")),
    ("urllib3", re.compile(r"\(urllib3/")),
    ("requests", re.compile(r"\(requests/")),
    ("http.client", re.compile(r"\(http/client\.py:")),
    ("socket", re.compile(r"\(socket\.py:")),
    ("xml", re.compile(r"\(xml/")),
    ("threading / queue / futures", re.compile(r"\((threading|queue)\.py:|\(concurrent/futures/")),
    ("the app (shared, function_app)", re.compile(r"\(shared/|\(function_app\.py:")),
    ("the local host", re.compile(r"\(localdev/functions_host/")),
)
_APP = AREAS[-2][1]
# a frame's path is shortened to what follows the last of these (the package-relative path)
_ROOTS = re.compile(
    r"\((?:[^()]*/(?:site-packages|dist-packages|python3\.\d+)/|[^()]*/(?=(?:shared|localdev)/|function_app\.py))"
)


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def start(pid: int, output: Path) -> subprocess.Popen | None:
    """Sample process `pid` until it exits; None when py-spy is not installed."""
    binary = py_spy()
    if binary is None:
        print("bench: --profile needs py-spy in the virtualenv (.venv/bin/pip install py-spy); not profiling")
        return None
    command = [binary, "record", "--pid", str(pid), "--rate", str(RATE), "--format", "raw", "--nonblocking", "--gil"]
    command += ["--function", "--full-filenames", "--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def finish(spy: subprocess.Popen | None, output: Path) -> dict | None:
    if spy is None:
        return None
    try:
        spy.wait(timeout=60)
    except subprocess.TimeoutExpired:
        spy.terminate()
        spy.wait(timeout=10)
    return summarize(output) if output.exists() else None


def _frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rstrip().rpartition(" ")
    return [_ROOTS.sub("(", f) for f in stack.split(";") if f.strip()], int(count)


def summarize(path: Path, top: int = 15) -> dict:
    """Samples by function (self: the innermost frame; total: anywhere on the stack) and by area
    (the innermost frame that falls in one of AREAS). Samples in which no thread held the GIL
    (py-spy writes them with an empty stack) are counted apart, as idle."""
    own: Counter = Counter()
    total: Counter = Counter()
    areas: Counter = Counter()
    samples = idle = through_app = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        frames, count = _frames(line)
        if not frames:
            idle += count
            continue
        samples += count
        through_app += count if any(_APP.search(f) for f in frames) else 0
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
        area = next((name for frame in reversed(frames) for name, rx in AREAS if rx.search(frame)), "other")
        areas[area] += count

    def share(counter: Counter) -> list[list]:
        return [[name, n, round(n / samples, 4)] for name, n in counter.most_common(top)] if samples else []

    return {
        "samples": samples,
        "idle_samples": idle,
        "through_app_code": round(through_app / samples, 4) if samples else None,
        "areas": share(areas),
        "self": share(own),
        "total": share(total),
    }


def lines(name: str, summary: dict) -> list[str]:
    out = [f"profile of {name}: {summary['samples']} samples of running threads ({summary['idle_samples']} idle)"]
    if summary.get("through_app_code") is not None:
        out.append(f"  {summary['through_app_code']:.1%} of them run through the app's code (shared/, function_app.py)")
    out += ["  by area (the innermost frame's):"] + [f"    {share:6.1%}  {area}" for area, _, share in summary["areas"]]
    out += ["  by function (self):"] + [f"    {share:6.1%}  {fn}" for fn, _, share in summary["self"][:10]]
    out += ["  by function (on the stack):"] + [f"    {share:6.1%}  {fn}" for fn, _, share in summary["total"][:15]]
    return out
