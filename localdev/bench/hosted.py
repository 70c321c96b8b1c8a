"""The hosted contenders, each in a child process (see :mod:`.child`): the local host
(:mod:`localdev.functions_host`) running the app of ``function_app.py`` (``app``) or the no-op app of
:mod:`.noop_app` (``noop-host``), with the settings the parent put in the environment.

The parent keeps the requests queue topped up (see :mod:`.feed`), so the host always finds
requests waiting. The window of CPU time runs from ``go`` (the host starts) to ``stop`` (the
parent has seen every terminal event; for the no-op app, once the child said every request was
handled). Log records go to a file at INFO, as the Python worker takes them at INFO.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from localdev.bench.child import log_to_file
from localdev.functions_host import LocalHost

ROOT = Path(__file__).resolve().parents[2]
SUBMIT = "submit_checkpoint_deletion"


def run(contender: str, config: dict, channel, window) -> None:
    log_to_file(config)
    if contender == "app":
        if config.get("telemetry"):
            _record_telemetry()
        import function_app  # after the settings are in the environment, as the worker imports it

        app = function_app.app
    else:
        from localdev.bench import noop_app

        app = noop_app.app
    host = LocalHost(app, os.environ, ROOT / "host.json")
    channel.send("ready")
    channel.expect("go")
    window.start()
    host.start()
    stopped = threading.Event()
    progress = threading.Thread(target=_progress, args=(host, contender, config["count"], channel, stopped))
    progress.start()
    channel.expect("stop")
    ended = time.time()
    cpu = window.stop()
    stopped.set()
    progress.join()
    host.stop(timeout=30)
    channel.send("done", ended=ended, outcomes={}, **cpu)


def _progress(host: LocalHost, contender: str, count: int, channel, stopped: threading.Event) -> None:
    """Every 0.05 s: how many requests the host has handed over (for the parent's feeding); the
    no-op app also says when it has been handed every one (the time it saw it, to 0.05 s)."""
    idle = False
    while not stopped.wait(0.05):
        stats = host.stats[SUBMIT]
        handled = stats.successes + stats.failures
        channel.send("progress", handled=handled)
        if contender == "noop-host" and not idle and handled >= count:
            idle = True
            channel.send("idle", ended=time.time(), handled=handled)


def _record_telemetry() -> None:
    """The app's spans and metrics into in-memory exporters, batched as the Azure Monitor distro
    batches them (spans every 5 s, metrics every 60 s), so that the bench counts their cost."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from shared.telemetry import configure_telemetry

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter(), schedule_delay_millis=5000))
    configure_telemetry(
        tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()])
    )
