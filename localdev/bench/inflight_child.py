"""The app's side of :mod:`.inflight`, in a child process: ``python -m localdev.bench.inflight_child
fill|poll CONFIG``, with the app settings (pointing at the stand-ins) in its environment.

``fill`` puts the operations in flight as the app's submit step does, without its events: each
deletion POSTed through the app's :class:`~shared.arm_client.ArmClient` (from
:func:`shared.runtime.build_services`), then its record added through the app's
:class:`~shared.tracking.TrackingStore`, invisible for the POST's ``Retry-After``. It says
``filled`` with the counts and exits: none of its memory is in the poller's figures.

``poll`` builds the app's services the same way, says ``ready``, and on ``go`` calls the real
:class:`~shared.poll.Poller`'s ``run()`` back to back, as a timer that fires again as soon as
the last run ended would (a run that found nothing waits a second, as the tick would), until
``stop``; then it reports its CPU over the window (``done``) and exits at once. The one thing
the bench adds to the app is :class:`CountedStore` around the poller's tracking store: it counts
the storage calls and their time, said once a second (``tick``) beside the poller's outcomes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from localdev.bench.child import Channel, CpuWindow, log_to_file
from localdev.bench.plan import read_items

FILL_THREADS = 32


class CountedStore:
    """A TrackingStore that counts each kind of call it passes on and the seconds they took."""

    def __init__(self, store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self.calls: Counter = Counter()
        self.seconds: Counter = Counter()

    def _count(self, kind: str, started: float, messages: int = 1) -> None:
        with self._lock:
            self.calls[kind] += messages
            self.seconds[kind] += time.perf_counter() - started

    def receive_due(self, max_messages: int, lease_seconds: int):
        started = time.perf_counter()
        try:
            taken = list(self._store.receive_due(max_messages, lease_seconds))
        finally:
            self._count("receive", started)
        with self._lock:
            self.calls["received"] += len(taken)
        return iter(taken)

    def reschedule(self, message, operation, delay_seconds: int) -> None:
        started = time.perf_counter()
        try:
            self._store.reschedule(message, operation, delay_seconds)
        finally:
            self._count("reschedule", started)

    def remove(self, message) -> None:
        started = time.perf_counter()
        try:
            self._store.remove(message)
        finally:
            self._count("remove", started)

    def add(self, operation, delay_seconds: int) -> None:
        self._store.add(operation, delay_seconds)

    def snapshot(self) -> dict:
        with self._lock:
            return {"calls": dict(self.calls), "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}


def _services():
    from shared.runtime import build_services, queue_host_settings
    from shared.settings import Settings

    return build_services(Settings.from_env(), int(queue_host_settings().get("maxDequeueCount", 5)))


def fill(config: dict, channel: Channel) -> None:
    from shared.arm_answers import DEFAULT_RETRY_AFTER, AnswerState
    from shared.queues import open_queue
    from shared.request import DeletionRequest
    from shared.tracking import Operation, TrackingStore, visibility_delay

    services = _services()
    settings = services.settings
    tracking = TrackingStore(open_queue(settings.storage, settings.tracking_queue, pool_size=FILL_THREADS))
    outcomes: Counter = Counter()
    lock = threading.Lock()

    def one(item) -> None:
        request = DeletionRequest(
            resource_uri=item.resource_uri, request_id=item.request_id, checkpoint_id=item.checkpoint_id
        )
        answer = services.arm.delete_checkpoint(request)
        if answer.state == AnswerState.ACCEPTED:
            operation = Operation.accepted(request, answer.location, answer.async_url, time.time())
            tracking.add(operation, visibility_delay(answer.retry_after, DEFAULT_RETRY_AFTER))
        with lock:
            outcomes[str(answer.state)] += 1

    started = time.time()
    with ThreadPoolExecutor(FILL_THREADS, thread_name_prefix="fill") as pool:
        list(pool.map(one, read_items(Path(config["items"]))))
    channel.send("filled", seconds=time.time() - started, outcomes=dict(outcomes))
    services.close()


def poll(config: dict, channel: Channel) -> None:
    services = _services()
    poller = services.poller
    store = CountedStore(poller._tracking)  # measuring only: every call goes to the app's store
    poller._tracking = store
    outcomes: Counter = Counter()
    runs = [0]
    stop = threading.Event()

    def runs_back_to_back() -> None:
        while not stop.is_set():
            counted = poller.run()
            outcomes.update(counted)
            runs[0] += 1
            if not counted:
                stop.wait(1.0)  # nothing was due: the next tick, a second later

    def ticks() -> None:
        while not stop.wait(1.0):
            channel.send("tick", t=time.time(), runs=runs[0], outcomes=dict(outcomes), **store.snapshot())

    channel.send("ready", pid=os.getpid())
    channel.expect("go")
    window = CpuWindow()
    window.start()
    threading.Thread(target=runs_back_to_back, name="poll-timer", daemon=True).start()
    threading.Thread(target=ticks, name="ticks", daemon=True).start()
    channel.expect("stop")
    cpu = window.stop()
    stop.set()
    channel.send("done", ended=time.time(), runs=runs[0], outcomes=dict(outcomes), **store.snapshot(), **cpu)
    logging.shutdown()
    os._exit(0)  # a run may be under way: its workers are not waited for


def main(argv: list[str]) -> int:
    mode, config = argv[0], json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    channel = Channel()
    log_to_file(config, "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s")
    if mode == "fill":
        fill(config, channel)
    else:
        poll(config, channel)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
