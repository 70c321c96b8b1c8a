"""The host itself: :class:`LocalHost` finds the app's functions, builds a listener for each and
runs them, in background threads as under ``func start`` or one round at a time on request."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import json
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import azure.functions as func

from localdev.functions_host.bindings import Binding
from localdev.functions_host.config import MIN_POLLING_INTERVAL, HostConfigError, build_options, load_host_json
from localdev.functions_host.connections import DEFAULT_CONNECTION, Queues
from localdev.functions_host.invoker import Invoker, describe
from localdev.functions_host.listeners import FunctionBase, FunctionStats, HostServices, QueueFunction, TimerFunction
from localdev.functions_host.messages import MessageCodec

log = logging.getLogger(__package__)


class LocalHost:
    """Runs the queue- and timer-triggered functions of a v2 ``FunctionApp`` like the host does.

    ``settings`` are the app settings (``%NAME%`` references and ``connection`` names are looked
    up there); ``host_json`` is a path to host.json, its parsed dict, or None for the defaults;
    ``overrides`` replaces host.json values, keyed by their host.json names
    (``batchSize``, ``newBatchThreshold``, ``maxPollingInterval``, ``visibilityTimeout``,
    ``maxDequeueCount``, ``messageEncoding``, ``functionTimeout``) or the local-only
    ``processingVisibilityTimeout`` and ``maxWorkers``. Durations take host.json forms:
    ``"hh:mm:ss"`` strings, numbers of milliseconds, or ``timedelta``.
    """

    def __init__(
        self,
        app: func.FunctionRegister,
        settings: Mapping[str, str],
        host_json: Path | str | Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.settings: Mapping[str, str] = settings
        self.host_json = load_host_json(host_json)
        self.options = build_options(self.host_json, overrides)
        self.services = HostServices(
            settings=settings,
            options=self.options,
            queues=Queues(settings),
            codec=MessageCodec(self.options.queues.message_encoding),
            invoker=Invoker(self.options.function_timeout),
        )
        self.queue_functions: dict[str, QueueFunction] = {}
        self.timer_functions: dict[str, TimerFunction] = {}
        self._discover()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False

    # -- discovery --------------------------------------------------------------------------------
    def _discover(self) -> None:
        for function in _functions_of(self.app):
            name = function.get_function_name()
            bindings = [
                Binding(type=d.get("type", ""), name=d.get("name", ""), direction=str(d.get("direction", "")), data=d)
                for d in (json.loads(raw) for raw in function.get_raw_bindings())
            ]
            trigger = next((b for b in bindings if b.type.lower().endswith("trigger")), None)
            if trigger is None:
                raise HostConfigError(f"function {name!r} has no trigger binding")
            disabled = str(self.settings.get(f"AzureWebJobs.{name}.Disabled", "")).strip().lower()
            if disabled in ("true", "1"):
                log.info("Function '%s' is disabled by the AzureWebJobs.%s.Disabled setting", name, name)
                continue
            if trigger.type == "queueTrigger":
                self.queue_functions[name] = QueueFunction(self.services, function, bindings)
            elif trigger.type == "timerTrigger":
                self.timer_functions[name] = TimerFunction(self.services, function, bindings)
            else:
                log.warning(
                    "Function '%s' has a %s trigger, which localdev.functions_host does not run; skipped",
                    name,
                    trigger.type,
                )
        for fn in self.queue_functions.values():
            log.info(
                "Found queue function '%s' on queue '%s' (connection %s)",
                fn.name,
                fn.queue_name,
                fn.connection or DEFAULT_CONNECTION,
            )
        for fn in self.timer_functions.values():
            log.info(
                "Found timer function '%s' with schedule '%s'%s",
                fn.name,
                fn.schedule_text,
                " (runOnStartup)" if fn.run_on_startup else "",
            )

    # -- the worker pool (maxWorkers / PYTHON_THREADPOOL_THREAD_COUNT) ---------------------------
    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                workers = self.options.max_workers
                if workers is None and self.settings.get("PYTHON_THREADPOOL_THREAD_COUNT"):
                    workers = int(self.settings["PYTHON_THREADPOOL_THREAD_COUNT"])
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=workers, thread_name_prefix="localhost-fn"
                )
            return self._pool

    # -- deterministic, synchronous API -----------------------------------------------------------
    def _queue_function(self, name: str) -> QueueFunction:
        try:
            return self.queue_functions[name]
        except KeyError:
            raise KeyError(f"no queue-triggered function named {name!r}; have {sorted(self.queue_functions)}") from None

    def _timer_function(self, name: str) -> TimerFunction:
        try:
            return self.timer_functions[name]
        except KeyError:
            raise KeyError(f"no timer-triggered function named {name!r}; have {sorted(self.timer_functions)}") from None

    def deliver_once(self, function_name: str) -> int:
        """One receive (up to batchSize) and dispatch of ``function_name``'s queue, synchronously:
        returns after every received message was handled, with how many there were."""
        fn = self._queue_function(function_name)
        messages = fn.receive(self.options.queues.batch_size)
        if not messages:
            return 0
        futures = [self._executor().submit(fn.process, m) for m in messages]
        for future in concurrent.futures.as_completed(futures):
            future.result()  # process() handles user errors; storage errors surface here
        return len(messages)

    def drain(self, function_name: str, timeout: float = 30.0) -> int:
        """deliver_once() until the queue has no visible message; returns messages handled."""
        deadline = time.monotonic() + timeout
        handled = 0
        while True:
            count = self.deliver_once(function_name)
            handled += count
            if count == 0:
                return handled
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"queue of {function_name!r} still had messages after {timeout} s ({handled} handled)"
                )

    def fire(self, function_name: str) -> bool:
        """Run a timer function once now, synchronously. Returns False (a skipped tick, counted,
        and past_due for the next run) if a run of that timer is still going."""
        fn = self._timer_function(function_name)
        past_due = fn.try_begin()
        if past_due is None:
            return False
        fn.run(past_due)
        return True

    @property
    def stats(self) -> dict[str, FunctionStats]:
        """A snapshot of the per-function counts."""
        functions: list[FunctionBase] = [*self.queue_functions.values(), *self.timer_functions.values()]
        return {fn.name: dataclasses.replace(fn.stats) for fn in functions}

    # -- background running -----------------------------------------------------------------------
    def start(self) -> LocalHost:
        """Start a listener thread per queue function and a scheduler thread per timer function."""
        if self._started:
            return self
        self._started = True
        self._stopping.clear()
        for fn in self.queue_functions.values():
            self._spawn(f"queue-{fn.name}", self._listen, fn)
        for fn in self.timer_functions.values():
            self._spawn(f"timer-{fn.name}", self._schedule, fn)
        log.info(
            "Host started: %d queue function(s), %d timer function(s)",
            len(self.queue_functions),
            len(self.timer_functions),
        )
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop polling and ticking, let in-flight invocations finish, and join every thread."""
        self._stopping.set()
        for fn in self.queue_functions.values():
            fn.wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        if self._started:
            self._started = False
            log.info("Host stopped")

    def __enter__(self) -> LocalHost:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _listen(self, fn: QueueFunction) -> None:
        """The host's QueueListener loop: receive a batch, dispatch it, fetch again when the
        in-flight count drops to newBatchThreshold, back off exponentially while empty."""
        opts = self.options.queues
        in_flight: set[concurrent.futures.Future[str]] = set()
        failures_in_a_row = 0
        delay = MIN_POLLING_INTERVAL
        while not self._stopping.is_set():
            try:
                messages = fn.receive(opts.batch_size)
            except Exception as exc:  # noqa: BLE001 - storage trouble: back off and retry like the host
                log.warning("Polling queue '%s' failed: %s", fn.queue_name, describe(exc))
                messages = []
            if messages:
                delay = MIN_POLLING_INTERVAL
                failures_in_a_row = 0
                for message in messages:
                    in_flight.add(self._executor().submit(fn.process, message))
                while len(in_flight) > opts.new_batch_threshold and not self._stopping.is_set():
                    done, in_flight = concurrent.futures.wait(
                        in_flight, timeout=0.5, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    _report(done, fn)
                done = {f for f in in_flight if f.done()}
                in_flight -= done
                _report(done, fn)
                continue
            # Randomized exponential back-off between MIN_POLLING_INTERVAL and maxPollingInterval.
            failures_in_a_row += 1
            delay = min(opts.max_polling_interval, MIN_POLLING_INTERVAL * (2 ** min(failures_in_a_row - 1, 30)))
            wait = min(opts.max_polling_interval, delay * random.uniform(0.8, 1.2))
            if fn.wake.wait(wait):
                fn.wake.clear()
                failures_in_a_row = 0
        concurrent.futures.wait(in_flight)
        _report(in_flight, fn)

    def _schedule(self, fn: TimerFunction) -> None:
        if fn.run_on_startup:
            self._tick(fn)
        next_time = fn.schedule.next_after(dt.datetime.now())
        while not self._stopping.is_set():
            now = dt.datetime.now()
            if now < next_time:
                self._stopping.wait(min((next_time - now).total_seconds(), 1.0))
                continue
            self._tick(fn)
            next_time = fn.schedule.next_after(max(now, next_time))

    def _tick(self, fn: TimerFunction) -> None:
        past_due = fn.try_begin()
        if past_due is not None:
            try:
                self._executor().submit(fn.run, past_due)
            except RuntimeError:  # pool shut down under us: stopping
                fn.release_slot()


# FunctionApp.get_functions() indexes an app once, as the worker does: a second call fails its
# unique-name check against the names the first call recorded. Index with that record cleared
# (real duplicates still fail) and remember the answer, so that several LocalHosts - and tests
# that index the app themselves - can share one app object.
_FUNCTIONS: weakref.WeakKeyDictionary[Any, list[func.Function]] = weakref.WeakKeyDictionary()
_FUNCTIONS_LOCK = threading.Lock()


def _functions_of(app: func.FunctionRegister) -> list[func.Function]:
    with _FUNCTIONS_LOCK:
        functions = _FUNCTIONS.get(app)
        if functions is None:
            recorded = getattr(app, "functions_bindings", None)
            app.functions_bindings = None
            try:
                functions = list(app.get_functions())
            finally:
                if recorded:
                    app.functions_bindings = recorded
            _FUNCTIONS[app] = functions
        return functions


def _report(done: Iterable[concurrent.futures.Future[str]], fn: QueueFunction) -> None:
    for future in done:
        exc = future.exception()
        if exc is not None:
            log.error("Handling a message of '%s' failed in the host: %s", fn.name, describe(exc), exc_info=exc)


def find_function_app(module: Any) -> func.FunctionRegister:
    """The one FunctionApp (any FunctionRegister) instance at the module's top level."""
    apps = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
    if not apps:
        raise HostConfigError(f"{module.__name__} defines no azure.functions.FunctionApp instance")
    if len({id(a) for a in apps}) > 1:
        raise HostConfigError(f"{module.__name__} defines more than one FunctionApp instance")
    return apps[0]
