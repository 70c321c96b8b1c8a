"""A local stand-in for ``func start``: runs the queue and timer functions of an azure-functions
v2 (decorator model) ``FunctionApp`` against Azurite or any storage account.

It reads the functions and their bindings from the app object itself (``app.get_functions()``),
the queue settings from host.json (``extensions.queues``, ``functionTimeout``) and the app
settings from a mapping, and then behaves like the Functions host's queue listener and timer
listener, handing the function the same ``azure.functions`` objects the Python worker builds::

    from localdev.host import LocalHost
    with LocalHost(app, settings={"AzureWebJobsStorage": conn}, host_json="host.json") as host:
        ...                      # background polling, as under `func start`
    host = LocalHost(app, settings, host_json, overrides={"maxPollingInterval": 200})
    host.deliver_once("my_queue_function")   # one receive + dispatch round, synchronously
    host.fire("my_timer_function")           # one timer run now, synchronously

Command line (loads local.settings.json ``Values`` into the environment, real env wins)::

    python -m localdev.host [--app-dir DIR] [--settings local.settings.json]

Only standard library, ``azure-functions``, ``azure-storage-queue`` and (for identity-based
connections) ``azure-identity`` are used; the app's own packages are not imported here.

Behaviour, following the WebJobs queue extension (QueueListener / QueueProcessor):

* A batch of ``batchSize`` is received with a 10-minute visibility that is renewed at half-time
  while the function runs; more are fetched once in-flight messages drop to
  ``newBatchThreshold`` (default ``batchSize // 2``: the host's Consumption-plan value; on
  dedicated plans it multiplies by the vCPU count). An empty or missing queue backs off from
  100 ms, doubling (randomised +-20 %) up to ``maxPollingInterval``; a message this host sends
  through an output binding wakes that queue's listener at once.
* Success deletes the message. Failure with ``dequeue_count >= maxDequeueCount`` copies the
  stored text to ``<queue>-poison`` (created if missing) and deletes it; otherwise the message
  is released with ``visibilityTimeout``. A message received with a dequeue count already above
  ``maxDequeueCount`` goes to the poison queue without running the function.
* ``messageEncoding`` base64: a message that is not valid base64 goes straight to the poison
  queue, unchanged and without an invocation (the extension's MessageDecodingFailed handler).
* ``functionTimeout``: an invocation that runs longer counts as failed (the message is released
  or poisoned). Python cannot kill the thread, so it is abandoned and finishes on its own; a
  timer's no-overlap slot stays taken until it really ends. No functionTimeout: no limit.
* Timers: NCRONTAB on the local wall clock (see :class:`CronSchedule`) or a TimeSpan interval.
  A tick that finds the previous run still going is skipped, counted in ``stats[...].skipped``
  and makes the next run's ``past_due`` True; that is the only source of ``past_due``
  (``useMonitor`` schedule status is not persisted). ``runOnStartup`` runs once at start().
* Also supported: ``queue`` output bindings (``func.Out`` parameters and ``$return``), a
  ``context`` parameter, ``async def`` functions, ``AzureWebJobs.<name>.Disabled``. Functions
  with other triggers are skipped with a warning; other bindings are a start-up error.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import calendar
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import importlib
import inspect
import json
import logging
import os
import random
import re
import signal
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.functions import meta
from azure.functions.queue import QueueMessageInConverter, QueueMessageOutConverter
from azure.functions.timer import TimerRequestConverter
from azure.storage.queue import QueueClient, QueueServiceClient

log = logging.getLogger("localdev.host")

__all__ = [
    "CronSchedule",
    "FunctionStats",
    "HostConfigError",
    "HostOptions",
    "IntervalSchedule",
    "LocalHost",
    "QueueOptions",
    "find_function_app",
    "load_host_json",
    "load_local_settings",
    "main",
    "parse_duration",
    "parse_schedule",
    "resolve_setting_refs",
]

DEV_ACCOUNT_NAME = "devstoreaccount1"
# Azurite's documented, public development account key (not a secret).
DEV_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEFAULT_CONNECTION = "AzureWebJobsStorage"
MIN_POLLING_INTERVAL = 0.1  # the host's QueuePollingIntervals.Minimum (100 ms)


class HostConfigError(ValueError):
    """The app, its bindings, host.json or the settings cannot be run as the host would run them."""


class FunctionTimeoutError(TimeoutError):
    """An invocation ran longer than host.json's functionTimeout."""


# ------------------------------------------------------------------------------------------------
# durations (host.json TimeSpan values)
# ------------------------------------------------------------------------------------------------
_TIMESPAN = re.compile(
    r"^(?P<neg>-)?(?:(?P<days>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{1,2})(?::(?P<s>\d{1,2})(?:\.(?P<f>\d{1,7}))?)?$"
)


def parse_duration(value: Any, *, what: str = "duration") -> float:
    """A host.json duration in seconds.

    Accepts what the host accepts for TimeSpan options: ``"hh:mm:ss[.fffffff]"``,
    ``"d.hh:mm:ss"``, ``"hh:mm"``, a bare whole number string meaning days (as .NET's
    TimeSpan.Parse reads it), and JSON numbers meaning milliseconds (as the host reads
    ``maxPollingInterval``). A :class:`datetime.timedelta` is taken as is.
    """
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bool):
        raise HostConfigError(f"{what}: {value!r} is not a duration")
    if isinstance(value, (int, float)):
        return float(value) / 1000.0
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+", text):
            return int(text) * 86400.0
        match = _TIMESPAN.match(text)
        if match:
            seconds = (
                int(match["days"] or 0) * 86400
                + int(match["h"]) * 3600
                + int(match["m"]) * 60
                + int(match["s"] or 0)
                + (int((match["f"] or "0").ljust(7, "0")) / 1e7)
            )
            if int(match["h"]) > 23 or int(match["m"]) > 59 or int(match["s"] or 0) > 59:
                raise HostConfigError(f"{what}: {value!r} is not a TimeSpan (hh:mm:ss)")
            return -seconds if match["neg"] else seconds
    raise HostConfigError(f'{what}: {value!r} is not a TimeSpan like "00:00:30" or a number of milliseconds')


# ------------------------------------------------------------------------------------------------
# options from host.json
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class QueueOptions:
    """host.json ``extensions.queues`` with the host's defaults (durations in seconds)."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"


@dataclasses.dataclass(frozen=True)
class HostOptions:
    queues: QueueOptions = QueueOptions()
    function_timeout: float | None = None  # seconds; None = no limit
    # Local-only knobs (not host.json): how long a received message stays invisible while its
    # function runs (the host uses 10 minutes and renews at half-time), and the thread count
    # (the Python worker's PYTHON_THREADPOOL_THREAD_COUNT).
    processing_visibility_timeout: float = 600.0
    max_workers: int | None = None


_QUEUE_KEYS = {
    "batchsize": "batchSize",
    "newbatchthreshold": "newBatchThreshold",
    "maxpollinginterval": "maxPollingInterval",
    "visibilitytimeout": "visibilityTimeout",
    "maxdequeuecount": "maxDequeueCount",
    "messageencoding": "messageEncoding",
}
_HOST_KEYS = {
    "functiontimeout": "functionTimeout",
    "processingvisibilitytimeout": "processingVisibilityTimeout",
    "maxworkers": "maxWorkers",
}


def _strip_json_comments(text: str) -> str:
    # host.json may carry // and /* */ comments (the host tolerates them); keep string literals.
    pattern = re.compile(r'("(?:\\.|[^"\\])*")|//[^\n]*|/\*.*?\*/', re.S)
    return pattern.sub(lambda m: m.group(1) or "", text)


def _lower_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k).lower(): _lower_keys(v) for k, v in value.items()}
    return value


def load_host_json(host_json: Path | str | Mapping[str, Any] | None) -> dict[str, Any]:
    """host.json as a dict with lower-cased keys (the host's configuration is case-insensitive)."""
    if host_json is None:
        return {}
    if isinstance(host_json, Mapping):
        return _lower_keys(host_json)
    path = Path(host_json)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise HostConfigError(f"cannot read host.json at {path}: {exc}") from exc
    try:
        data = json.loads(_strip_json_comments(text))
    except json.JSONDecodeError as exc:
        raise HostConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise HostConfigError(f"{path} must hold a JSON object")
    return _lower_keys(data)


def _int_option(value: Any, name: str, low: int, high: int | None = None) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise HostConfigError(f"{name}: {value!r} is not a whole number") from None
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise HostConfigError(f"{name}: {number} must be {bound}")
    return number


def build_options(host_json: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> HostOptions:
    """Merge host.json (lower-cased) and overrides (host.json key names) into HostOptions."""
    queues_raw = dict(((host_json.get("extensions") or {}).get("queues")) or {})
    host_raw = {k: host_json[k] for k in _HOST_KEYS if k in host_json}
    for key, value in (overrides or {}).items():
        low = key.lower()
        if low in _QUEUE_KEYS:
            queues_raw[low] = value
        elif low in _HOST_KEYS:
            host_raw[low] = value
        else:
            known = sorted([*_QUEUE_KEYS.values(), *_HOST_KEYS.values()])
            raise HostConfigError(f"unknown override {key!r}; known: {', '.join(known)}")

    batch_size = _int_option(queues_raw.get("batchsize", 16), "extensions.queues.batchSize", 1, 32)
    threshold = queues_raw.get("newbatchthreshold")
    new_batch_threshold = (
        batch_size // 2
        if threshold is None or threshold == -1
        else _int_option(threshold, "extensions.queues.newBatchThreshold", 0)
    )
    max_polling = parse_duration(
        queues_raw.get("maxpollinginterval", "00:01:00"), what="extensions.queues.maxPollingInterval"
    )
    if max_polling < MIN_POLLING_INTERVAL:
        raise HostConfigError(
            f"extensions.queues.maxPollingInterval must be at least 100 ms, got {max_polling * 1000:g} ms"
        )
    visibility = parse_duration(
        queues_raw.get("visibilitytimeout", "00:00:00"), what="extensions.queues.visibilityTimeout"
    )
    if visibility < 0 or visibility > 7 * 86400:
        raise HostConfigError("extensions.queues.visibilityTimeout must be between 0 and 7 days")
    max_dequeue = _int_option(queues_raw.get("maxdequeuecount", 5), "extensions.queues.maxDequeueCount", 1)
    encoding = str(queues_raw.get("messageencoding", "base64")).strip().lower()
    if encoding not in ("base64", "none"):
        raise HostConfigError(f'extensions.queues.messageEncoding must be "base64" or "none", got {encoding!r}')

    timeout_raw = host_raw.get("functiontimeout")
    function_timeout: float | None = None
    if timeout_raw is not None:
        function_timeout = parse_duration(timeout_raw, what="functionTimeout")
        if function_timeout < 0:  # "-1" / "-00:00:01": unbounded
            function_timeout = None
    processing_visibility = parse_duration(
        host_raw.get("processingvisibilitytimeout", "00:10:00"), what="processingVisibilityTimeout"
    )
    if processing_visibility < 1:
        raise HostConfigError("processingVisibilityTimeout must be at least 1 second")
    max_workers = host_raw.get("maxworkers")
    if max_workers is not None:
        max_workers = _int_option(max_workers, "maxWorkers", 1)

    return HostOptions(
        queues=QueueOptions(
            batch_size=batch_size,
            new_batch_threshold=new_batch_threshold,
            max_polling_interval=max_polling,
            visibility_timeout=visibility,
            max_dequeue_count=max_dequeue,
            message_encoding=encoding,
        ),
        function_timeout=function_timeout,
        processing_visibility_timeout=processing_visibility,
        max_workers=max_workers,
    )


# ------------------------------------------------------------------------------------------------
# %SETTING% references
# ------------------------------------------------------------------------------------------------
_SETTING_REF = re.compile(r"%([^%]+)%")


def resolve_setting_refs(value: str, settings: Mapping[str, str], *, where: str = "binding") -> str:
    """Replace every ``%NAME%`` in ``value`` with ``settings[NAME]``, as the host does."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        resolved = settings.get(name)
        if resolved is None:
            raise HostConfigError(f"{where}: '%{name}%' does not resolve to a value: app setting {name!r} is not set")
        return str(resolved)

    return _SETTING_REF.sub(substitute, value)


# ------------------------------------------------------------------------------------------------
# NCRONTAB (six fields, seconds first) and TimeSpan schedules
# ------------------------------------------------------------------------------------------------
_MONTH_NAMES = {n.upper(): i for i, n in enumerate(calendar.month_abbr) if n}
_DAY_NAMES = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}


class CronSchedule:
    """An NCRONTAB expression as the Functions timer trigger reads it.

    Six fields ``second minute hour day month day-of-week`` (five fields are taken as having
    second 0, as the host does). Each field is ``*``, a value, a range ``a-b``, a step
    ``*/n`` / ``a-b/n`` / ``a/n``, or a comma list of those; months and days of week may be
    named (JAN, MON). Day of week runs 0 (Sunday) to 6. Like NCrontab, a time must match the
    day-of-month AND the day-of-week fields. Times are the local wall clock, second resolution.
    """

    _FIELDS = (
        ("second", 0, 59, None),
        ("minute", 0, 59, None),
        ("hour", 0, 23, None),
        ("day", 1, 31, None),
        ("month", 1, 12, _MONTH_NAMES),
        ("day-of-week", 0, 6, _DAY_NAMES),
    )

    def __init__(self, expression: str) -> None:
        self.expression = expression
        parts = expression.split()
        if len(parts) == 5:
            parts = ["0", *parts]
        if len(parts) != 6:
            raise HostConfigError(
                f"schedule {expression!r}: an NCRONTAB expression has six fields "
                "(second minute hour day month day-of-week)"
            )
        sets = [self._parse_field(text, *spec) for text, spec in zip(parts, self._FIELDS, strict=True)]
        self.seconds, self.minutes, self.hours, self.days, self.months, self.days_of_week = sets

    def _parse_field(
        self, text: str, name: str, low: int, high: int, names: Mapping[str, int] | None
    ) -> frozenset[int]:
        def value(token: str) -> int:
            upper = token.upper()
            if names and upper in names:
                return names[upper]
            if not token.isdigit():
                raise HostConfigError(f"schedule {self.expression!r}: {token!r} is not a valid {name}")
            number = int(token)
            if not low <= number <= high:
                raise HostConfigError(f"schedule {self.expression!r}: {name} {number} is outside {low}-{high}")
            return number

        result: set[int] = set()
        for item in text.split(","):
            if not item:
                raise HostConfigError(f"schedule {self.expression!r}: empty list item in the {name} field")
            base, _, step_text = item.partition("/")
            step = 1
            if step_text:
                if not step_text.isdigit() or int(step_text) == 0:
                    raise HostConfigError(f"schedule {self.expression!r}: bad step {step_text!r} in {name}")
                step = int(step_text)
            if base == "*":
                start, end = low, high
            elif "-" in base:
                first, _, last = base.partition("-")
                start, end = value(first), value(last)
                if start > end:
                    raise HostConfigError(f"schedule {self.expression!r}: range {base!r} runs backwards")
            else:
                start = value(base)
                end = high if step_text else start
            result.update(range(start, end + 1, step))
        return frozenset(result)

    def next_after(self, after: dt.datetime) -> dt.datetime:
        """The first matching time strictly after ``after`` (naive or aware; same kind back)."""
        t = after.replace(microsecond=0) + dt.timedelta(seconds=1)
        limit_year = t.year + 5
        while t.year <= limit_year:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0, second=0) + dt.timedelta(days=32)).replace(day=1)
                continue
            if t.day not in self.days or (t.weekday() + 1) % 7 not in self.days_of_week:
                t = t.replace(hour=0, minute=0, second=0) + dt.timedelta(days=1)
                continue
            if t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + dt.timedelta(hours=1)
                continue
            if t.minute not in self.minutes:
                t = t.replace(second=0) + dt.timedelta(minutes=1)
                continue
            if t.second not in self.seconds:
                t += dt.timedelta(seconds=1)
                continue
            return t
        raise HostConfigError(f"schedule {self.expression!r} never fires")

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r})"


class IntervalSchedule:
    """A TimeSpan schedule (``"00:05:00"``): every interval, counted from the previous tick."""

    def __init__(self, expression: str, interval: float) -> None:
        if interval <= 0:
            raise HostConfigError(f"schedule {expression!r}: the interval must be positive")
        self.expression = expression
        self.interval = interval

    def next_after(self, after: dt.datetime) -> dt.datetime:
        return after + dt.timedelta(seconds=self.interval)

    def __repr__(self) -> str:
        return f"IntervalSchedule({self.expression!r})"


def parse_schedule(expression: str) -> CronSchedule | IntervalSchedule:
    """A timer trigger's schedule: NCRONTAB, or a TimeSpan such as ``"00:05:00"``."""
    text = expression.strip()
    if ":" in text and len(text.split()) == 1:
        return IntervalSchedule(text, parse_duration(text, what=f"schedule {expression!r}"))
    return CronSchedule(text)


# ------------------------------------------------------------------------------------------------
# invocation plumbing: Out, Context, statistics
# ------------------------------------------------------------------------------------------------
class _Out(func.Out):
    """The output-binding parameter object (``func.Out[T]``) the worker passes."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


class _TraceContext(func._abc.TraceContext):
    trace_parent = ""
    trace_state = ""
    attributes: dict[str, str] = {}


class _RetryContext(func._abc.RetryContext):
    retry_count = 0
    max_retry_count = 0
    exception = None


class _Context(func.Context):
    """The ``context`` argument (``func.Context``) for functions that declare one."""

    _thread_local = threading.local()

    def __init__(self, invocation_id: str, function_name: str, function_directory: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> threading.local:
        return self._thread_local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> func._abc.TraceContext:
        return _TraceContext()

    @property
    def retry_context(self) -> func._abc.RetryContext:
        return _RetryContext()


@dataclasses.dataclass
class FunctionStats:
    """Per-function counts. ``invocations`` = successes + failures (runs of the user code);
    ``poisoned`` = messages moved to the poison queue (after failures, over-dequeued or
    undecodable); ``skipped`` = timer ticks skipped because the previous run was still going."""

    invocations: int = 0
    successes: int = 0
    failures: int = 0
    poisoned: int = 0
    skipped: int = 0


@dataclasses.dataclass
class _Binding:
    type: str
    name: str
    direction: str
    data: dict[str, Any]


class _FunctionBase:
    def __init__(self, host: LocalHost, function: func.Function, bindings: list[_Binding]) -> None:
        self.host = host
        self.name: str = function.get_function_name()
        self.user_function: Callable[..., Any] = function.get_user_function()
        self.script_dir = str(Path(inspect.getsourcefile(self.user_function) or ".").resolve().parent)
        self.trigger = next(b for b in bindings if b.type.lower().endswith("trigger"))
        self.outputs: list[_QueueOutput] = []
        for binding in bindings:
            if binding is self.trigger:
                continue
            if binding.type == "queue" and binding.direction.upper() == "OUT":
                self.outputs.append(_QueueOutput(host, self.name, binding))
            else:
                raise HostConfigError(
                    f"function {self.name!r}: binding {binding.name!r} of type {binding.type!r} "
                    f"({binding.direction}) is not supported by localdev.host"
                )
        parameters = inspect.signature(self.user_function).parameters
        binding_names = {b.name for b in bindings}
        self.wants_context = "context" in parameters and "context" not in binding_names
        for binding in [self.trigger, *self.outputs]:
            name = binding.name if isinstance(binding, _Binding) else binding.param
            if name != "$return" and name not in parameters:
                raise HostConfigError(f"function {self.name!r}: binding {name!r} has no parameter of that name")
        self.stats = FunctionStats()

    def invoke(self, trigger_value: Any, invocation_id: str) -> None:
        """Run the user function with its arguments, then flush its output bindings."""
        kwargs: dict[str, Any] = {self.trigger.name: trigger_value}
        outs: dict[str, _Out] = {}
        for output in self.outputs:
            if output.param != "$return":
                outs[output.param] = kwargs[output.param] = _Out()
        if self.wants_context:
            kwargs["context"] = _Context(invocation_id, self.name, self.script_dir)
        result = self.host._call_user_function(self.user_function, kwargs)
        for output in self.outputs:
            value = result if output.param == "$return" else outs[output.param].get()
            if value is not None:
                output.send(value)


class _QueueOutput:
    """A ``queue`` output binding: values set on it are sent when the function succeeds."""

    def __init__(self, host: LocalHost, function_name: str, binding: _Binding) -> None:
        self.host = host
        self.param = binding.name
        where = f"function {function_name!r}, binding {binding.name!r}"
        self.queue_name = resolve_setting_refs(str(binding.data.get("queueName", "")), host.settings, where=where)
        self.connection = resolve_setting_refs(str(binding.data.get("connection") or ""), host.settings, where=where)
        self.client = host._queue_client(self.connection, self.queue_name, where)

    def send(self, value: Any) -> None:
        datum = QueueMessageOutConverter.encode(value, expected_type=None)
        items: list[str | bytes]
        if datum.type in ("string", "bytes"):
            items = [datum.value]
        else:  # json: one QueueMessage ({"id", "body"}) or a list
            parsed = json.loads(datum.value)
            parsed = parsed if isinstance(parsed, list) else [parsed]
            items = [p["body"] if isinstance(p, dict) and "body" in p else p for p in parsed]
            items = [i if isinstance(i, (str, bytes)) else json.dumps(i) for i in items]
        for item in items:
            text = self.host._encode_text(item)
            try:
                self.client.send_message(text)
            except ResourceNotFoundError:
                with contextlib.suppress(ResourceExistsError):
                    self.client.create_queue()
                self.client.send_message(text)
        self.host._notify_queue(self.client)


class _TimerFunction(_FunctionBase):
    def __init__(self, host: LocalHost, function: func.Function, bindings: list[_Binding]) -> None:
        super().__init__(host, function, bindings)
        where = f"function {self.name!r}, binding {self.trigger.name!r}"
        self.schedule_text = resolve_setting_refs(
            str(self.trigger.data.get("schedule", "")), host.settings, where=where
        )
        try:
            self.schedule = parse_schedule(self.schedule_text)
        except HostConfigError as exc:
            raise HostConfigError(f"{where}: {exc}") from None
        self.run_on_startup = bool(self.trigger.data.get("runOnStartup", False))
        self._run_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._past_due_pending = False
        self.last_run: dt.datetime | None = None

    def try_begin(self) -> bool | None:
        """Claim the no-overlap slot: the past_due flag for this run, or None if one is running."""
        if not self._run_lock.acquire(blocking=False):
            with self._state_lock:
                self._past_due_pending = True
                self.stats.skipped += 1
            log.warning(
                "Timer '%s': skipped a tick because the previous run is still going (skipped so far: %d)",
                self.name,
                self.stats.skipped,
            )
            return None
        with self._state_lock:
            past_due, self._past_due_pending = self._past_due_pending, False
        return past_due

    def run(self, past_due: bool) -> bool:
        """One run; the no-overlap slot must have been claimed with try_begin()."""
        invocation_id = str(uuid.uuid4())
        now = dt.datetime.now().astimezone()
        try:
            status = {
                "Last": (self.last_run or now).isoformat(),
                "Next": self.schedule.next_after(now.replace(tzinfo=None)).isoformat(),
                "LastUpdated": now.isoformat(),
            }
            request = TimerRequestConverter.decode(
                meta.Datum(
                    json.dumps({"IsPastDue": past_due, "ScheduleStatus": status, "Schedule": {"AdjustForDST": True}}),
                    "json",
                ),
                trigger_metadata={},
            )
        except BaseException:
            self._run_lock.release()
            raise
        log.info(
            "Executing 'Functions.%s' (Reason='Timer fired at %s', Id=%s) past_due=%s",
            self.name,
            now.isoformat(timespec="seconds"),
            invocation_id,
            past_due,
        )
        started = time.monotonic()
        try:
            self.host._invoke_with_timeout(self, request, invocation_id, release=self._run_lock.release)
        except BaseException as exc:  # noqa: BLE001 - any failure of user code is an outcome
            self._record(False)
            log.error(
                "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms): %s",
                self.name,
                invocation_id,
                (time.monotonic() - started) * 1000,
                _describe(exc),
                exc_info=not isinstance(exc, FunctionTimeoutError),
            )
            return False
        finally:
            self.last_run = now
        self._record(True)
        log.info(
            "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)",
            self.name,
            invocation_id,
            (time.monotonic() - started) * 1000,
        )
        return True

    def _record(self, ok: bool) -> None:
        with self._state_lock:
            self.stats.invocations += 1
            if ok:
                self.stats.successes += 1
            else:
                self.stats.failures += 1


class _QueueFunction(_FunctionBase):
    def __init__(self, host: LocalHost, function: func.Function, bindings: list[_Binding]) -> None:
        super().__init__(host, function, bindings)
        where = f"function {self.name!r}, binding {self.trigger.name!r}"
        self.queue_name = resolve_setting_refs(str(self.trigger.data.get("queueName", "")), host.settings, where=where)
        self.connection = resolve_setting_refs(
            str(self.trigger.data.get("connection") or ""), host.settings, where=where
        )
        self.queue = host._queue_client(self.connection, self.queue_name, where)
        self.poison_queue = host._queue_client(self.connection, f"{self.queue_name}-poison", where)
        self._stats_lock = threading.Lock()
        self.wake = threading.Event()

    # -- one message ------------------------------------------------------------------------------
    def receive(self, count: int) -> list[Any]:
        try:
            pages = self.queue.receive_messages(
                messages_per_page=count,
                visibility_timeout=max(1, int(round(self.host.options.processing_visibility_timeout))),
            ).by_page()
            return list(next(pages, []))  # exactly one Get Messages call
        except ResourceNotFoundError:
            log.debug("Queue '%s' for function '%s' does not exist (yet)", self.queue_name, self.name)
            return []

    def process(self, message: Any) -> str:
        """Begin, invoke and complete one received message; returns the outcome."""
        opts = self.host.options.queues
        if message.dequeue_count > opts.max_dequeue_count:  # BeginProcessingMessageAsync
            self._poison(
                message, f"its dequeue count {message.dequeue_count} exceeds maxDequeueCount {opts.max_dequeue_count}"
            )
            return "poisoned"
        try:
            body = self.host._decode_text(message.content)
        except ValueError as exc:
            self._poison(message, f"it is not valid base64 ({exc}) and messageEncoding is base64")
            return "poisoned"

        invocation_id = str(uuid.uuid4())
        trigger_value = QueueMessageInConverter.decode(
            meta.Datum(body, "bytes"), trigger_metadata=_queue_trigger_metadata(message, self.queue_name)
        )
        log.info(
            "Executing 'Functions.%s' (Reason='New queue message detected on '%s'.', Id=%s) "
            "message_id=%s dequeue_count=%d",
            self.name,
            self.queue_name,
            invocation_id,
            message.id,
            message.dequeue_count,
        )
        started = time.monotonic()
        lease = _Lease(self.queue, message, self.host.options.processing_visibility_timeout)
        try:
            with lease:
                self.host._invoke_with_timeout(self, trigger_value, invocation_id)
        except BaseException as exc:  # noqa: BLE001 - any failure of user code is an outcome
            self._count(ok=False)
            log.error(
                "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms) message_id=%s dequeue_count=%d: %s",
                self.name,
                invocation_id,
                (time.monotonic() - started) * 1000,
                message.id,
                message.dequeue_count,
                _describe(exc),
                exc_info=not isinstance(exc, FunctionTimeoutError),
            )
            if message.dequeue_count >= opts.max_dequeue_count:
                self._poison(
                    message, f"it failed {message.dequeue_count} time(s), maxDequeueCount is {opts.max_dequeue_count}"
                )
                return "poisoned"
            self._release(message, lease.pop_receipt)
            return "failed"
        self._count(ok=True)
        log.info(
            "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms) message_id=%s dequeue_count=%d",
            self.name,
            invocation_id,
            (time.monotonic() - started) * 1000,
            message.id,
            message.dequeue_count,
        )
        self._delete(self.queue, message.id, lease.pop_receipt)
        return "succeeded"

    def _count(self, ok: bool) -> None:
        with self._stats_lock:
            self.stats.invocations += 1
            if ok:
                self.stats.successes += 1
            else:
                self.stats.failures += 1

    def _poison(self, message: Any, reason: str) -> None:
        log.warning(
            "Message %s on '%s' moved to queue '%s': %s",
            message.id,
            self.queue_name,
            self.poison_queue.queue_name,
            reason,
        )
        try:  # the raw text, as stored (the host copies MessageText with a non-encoding client)
            self.poison_queue.send_message(message.content)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                self.poison_queue.create_queue()
            self.poison_queue.send_message(message.content)
        with self._stats_lock:
            self.stats.poisoned += 1
        self._delete(self.queue, message.id, message.pop_receipt)

    def _release(self, message: Any, pop_receipt: str) -> None:
        visibility = int(round(self.host.options.queues.visibility_timeout))
        try:
            self.queue.update_message(message.id, pop_receipt=pop_receipt, visibility_timeout=visibility)
            log.info("Message %s released to '%s', visible again in %ds", message.id, self.queue_name, visibility)
        except (ResourceNotFoundError, HttpResponseError) as exc:
            # Pop receipt mismatch / message or queue gone: someone else owns it now (as the host).
            log.debug("Could not release message %s: %s", message.id, exc)

    def _delete(self, queue: QueueClient, message_id: str, pop_receipt: str) -> None:
        try:
            queue.delete_message(message_id, pop_receipt=pop_receipt)
        except (ResourceNotFoundError, HttpResponseError) as exc:
            log.debug("Could not delete message %s: %s", message_id, exc)


def _queue_trigger_metadata(message: Any, queue_name: str) -> dict[str, meta.Datum]:
    def when(value: dt.datetime | None) -> meta.Datum | None:
        if value is None:
            return None
        return meta.Datum(value.astimezone(dt.UTC).replace(microsecond=0).isoformat(), "string")

    metadata = {
        "Id": meta.Datum(message.id, "string"),
        "DequeueCount": meta.Datum(str(message.dequeue_count), "json"),
        "ExpirationTime": when(message.expires_on),
        "InsertionTime": when(message.inserted_on),
        "NextVisibleTime": when(message.next_visible_on),
        "PopReceipt": meta.Datum(message.pop_receipt, "string"),
        "QueueTrigger": meta.Datum(message.content, "string"),
    }
    return {k: v for k, v in metadata.items() if v is not None}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Lease:
    """Keeps a message invisible while its function runs: renews at half the visibility timeout
    (the host's UpdateQueueMessageVisibilityCommand) and tracks the newest pop receipt."""

    def __init__(self, queue: QueueClient, message: Any, visibility: float) -> None:
        self.queue = queue
        self.message_id = message.id
        self.pop_receipt: str = message.pop_receipt
        self.visibility = max(1, int(round(visibility)))
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Lease:
        self._thread = threading.Thread(target=self._renew, name=f"lease-{self.message_id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _renew(self) -> None:
        while not self._done.wait(self.visibility / 2):
            try:
                receipt = self.queue.update_message(
                    self.message_id, pop_receipt=self.pop_receipt, visibility_timeout=self.visibility
                )
                self.pop_receipt = receipt["pop_receipt"]
                log.debug("Renewed visibility of message %s for %ds", self.message_id, self.visibility)
            except (ResourceNotFoundError, HttpResponseError) as exc:
                log.warning("Could not renew visibility of message %s: %s", self.message_id, exc)
                return


# ------------------------------------------------------------------------------------------------
# the host
# ------------------------------------------------------------------------------------------------
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
        self._service_clients: dict[str, QueueServiceClient] = {}
        self.queue_functions: dict[str, _QueueFunction] = {}
        self.timer_functions: dict[str, _TimerFunction] = {}
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
                _Binding(type=d.get("type", ""), name=d.get("name", ""), direction=str(d.get("direction", "")), data=d)
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
                self.queue_functions[name] = _QueueFunction(self, function, bindings)
            elif trigger.type == "timerTrigger":
                self.timer_functions[name] = _TimerFunction(self, function, bindings)
            else:
                log.warning(
                    "Function '%s' has a %s trigger, which localdev.host does not run; skipped", name, trigger.type
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

    def _service_client(self, connection: str, where: str) -> QueueServiceClient:
        connection = connection or DEFAULT_CONNECTION
        client = self._service_clients.get(connection)
        if client is None:
            client = self._service_clients[connection] = _make_service_client(connection, self.settings, where)
        return client

    def _queue_client(self, connection: str, queue_name: str, where: str) -> QueueClient:
        if not queue_name:
            raise HostConfigError(f"{where}: queueName is empty")
        if not re.fullmatch(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}", queue_name):
            raise HostConfigError(
                f"{where}: {queue_name!r} is not a valid queue name (3-63 lowercase letters, digits, single hyphens)"
            )
        return self._service_client(connection, where).get_queue_client(queue_name)

    # -- message text encoding ----------------------------------------------------------------------
    def _decode_text(self, text: str | None) -> bytes:
        text = text or ""
        if self.options.queues.message_encoding == "none":
            return text.encode("utf-8")
        compact = re.sub(r"[ \t\r\n]", "", text)  # .NET's Convert.FromBase64String skips whitespace
        try:
            return base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(str(exc)) from None

    def _encode_text(self, value: str | bytes) -> str:
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if self.options.queues.message_encoding == "none":
            return data.decode("utf-8")
        return base64.b64encode(data).decode("ascii")

    def _notify_queue(self, client: QueueClient) -> None:
        # The host's SharedQueueWatcher: a message this host sends wakes that queue's listener.
        for fn in self.queue_functions.values():
            if fn.queue_name == client.queue_name and fn.queue.url == client.url:
                fn.wake.set()

    # -- running user code ------------------------------------------------------------------------------
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

    def _call_user_function(self, user_function: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        if inspect.iscoroutinefunction(user_function):
            return asyncio.run(user_function(**kwargs))
        return user_function(**kwargs)

    def _invoke_with_timeout(
        self,
        fn: _FunctionBase,
        trigger_value: Any,
        invocation_id: str,
        release: Callable[[], None] | None = None,
    ) -> None:
        """Invoke ``fn`` in the calling thread, or - with functionTimeout - in a thread of its own
        that is abandoned (not killed: Python cannot) when the timeout passes. ``release`` runs
        when the user code has really finished, even after a timeout."""
        timeout = self.options.function_timeout
        if timeout is None:
            try:
                fn.invoke(trigger_value, invocation_id)
            finally:
                if release:
                    release()
            return
        outcome: dict[str, BaseException | None] = {}
        finished = threading.Event()

        def target() -> None:
            try:
                fn.invoke(trigger_value, invocation_id)
                outcome["error"] = None
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                outcome["error"] = exc
            finally:
                finished.set()
                if release:
                    release()

        threading.Thread(target=target, name=f"invoke-{fn.name}", daemon=True).start()
        if not finished.wait(timeout):
            raise FunctionTimeoutError(
                f"Timeout value of {dt.timedelta(seconds=timeout)} was exceeded by function: Functions.{fn.name}"
            )
        if outcome.get("error") is not None:
            raise outcome["error"]

    # -- deterministic, synchronous API -----------------------------------------------------------
    def _queue_function(self, name: str) -> _QueueFunction:
        try:
            return self.queue_functions[name]
        except KeyError:
            raise KeyError(f"no queue-triggered function named {name!r}; have {sorted(self.queue_functions)}") from None

    def _timer_function(self, name: str) -> _TimerFunction:
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
        functions: list[_FunctionBase] = [*self.queue_functions.values(), *self.timer_functions.values()]
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

    def _listen(self, fn: _QueueFunction) -> None:
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
                log.warning("Polling queue '%s' failed: %s", fn.queue_name, _describe(exc))
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

    def _schedule(self, fn: _TimerFunction) -> None:
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

    def _tick(self, fn: _TimerFunction) -> None:
        past_due = fn.try_begin()
        if past_due is not None:
            try:
                self._executor().submit(fn.run, past_due)
            except RuntimeError:  # pool shut down under us: stopping
                fn._run_lock.release()


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


def _report(done: Iterable[concurrent.futures.Future[str]], fn: _QueueFunction) -> None:
    for future in done:
        exc = future.exception()
        if exc is not None:
            log.error("Handling a message of '%s' failed in the host: %s", fn.name, _describe(exc), exc_info=exc)


# ------------------------------------------------------------------------------------------------
# storage connections
# ------------------------------------------------------------------------------------------------
def _dev_storage_connection_string(value: str) -> str:
    parts = dict(p.split("=", 1) for p in value.strip().rstrip(";").split(";") if "=" in p)
    parts = {k.strip().lower(): v.strip() for k, v in parts.items()}
    proxy = parts.get("developmentstorageproxyuri")
    if proxy:
        endpoint = f"{proxy.rstrip('/')}:10001/{DEV_ACCOUNT_NAME}"
    else:
        endpoint = f"http://127.0.0.1:10001/{DEV_ACCOUNT_NAME}"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT_NAME};"
        f"AccountKey={DEV_ACCOUNT_KEY};QueueEndpoint={endpoint};"
    )


def _make_service_client(connection: str, settings: Mapping[str, str], where: str) -> QueueServiceClient:
    """The host's lookup: ``AzureWebJobs<name>`` then ``<name>``; each either a connection string
    or an identity-based section (``<name>__queueServiceUri`` / ``__serviceUri`` /
    ``__accountName``, with ``__credential``, ``__clientId``, ``__tenantId``, ``__clientSecret``)."""
    candidates = [f"AzureWebJobs{connection}", connection]
    for candidate in candidates:
        value = (settings.get(candidate) or "").strip()
        if value:
            if re.search(r"(?i)(^|;)\s*UseDevelopmentStorage\s*=\s*true", value):
                value = _dev_storage_connection_string(value)
            try:
                return QueueServiceClient.from_connection_string(value)
            except ValueError as exc:
                raise HostConfigError(
                    f"{where}: app setting {candidate!r} is not a storage connection string: {exc}"
                ) from None
        section = {
            k[len(candidate) + 2 :].lower(): v for k, v in settings.items() if k.startswith(f"{candidate}__") and v
        }
        if section:
            uri = section.get("queueserviceuri") or section.get("serviceuri")
            if not uri and section.get("accountname"):
                uri = f"https://{section['accountname']}.queue.core.windows.net"
            if not uri:
                raise HostConfigError(
                    f"{where}: identity-based connection {candidate!r} needs {candidate}__queueServiceUri "
                    f"(or __serviceUri / __accountName)"
                )
            return QueueServiceClient(uri.rstrip("/"), credential=_identity_credential(section))
    raise HostConfigError(
        f"{where}: storage connection {connection!r} is not configured: set app setting {connection!r} "
        f"to a connection string (UseDevelopmentStorage=true for Azurite) or {connection}__queueServiceUri "
        f"for an identity-based connection"
    )


def _identity_credential(section: Mapping[str, str]) -> Any:
    from azure.identity import ClientSecretCredential, DefaultAzureCredential, ManagedIdentityCredential

    client_id = section.get("clientid")
    if section.get("credential", "").lower() == "managedidentity":
        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    if client_id and section.get("tenantid") and section.get("clientsecret"):
        return ClientSecretCredential(section["tenantid"], client_id, section["clientsecret"])
    return DefaultAzureCredential(managed_identity_client_id=client_id) if client_id else DefaultAzureCredential()


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
def load_local_settings(path: Path, environ: dict[str, str] | os._Environ[str] | None = None) -> int:
    """Copy local.settings.json ``Values`` into ``environ`` (default os.environ) without
    replacing variables already set, as ``func start`` does. Returns how many were set."""
    environ = os.environ if environ is None else environ
    try:
        data = json.loads(_strip_json_comments(path.read_text(encoding="utf-8-sig")))
    except (OSError, json.JSONDecodeError) as exc:
        raise HostConfigError(f"cannot read {path}: {exc}") from exc
    if data.get("IsEncrypted"):
        raise HostConfigError(f"{path} is encrypted; decrypt it first (func settings decrypt)")
    values = data.get("Values") or {}
    if not isinstance(values, dict):
        raise HostConfigError(f"{path}: Values must be an object")
    count = 0
    for key, value in values.items():
        if key not in environ and value is not None:
            environ[key] = str(value)
            count += 1
    return count


def find_function_app(module: Any) -> func.FunctionRegister:
    """The one FunctionApp (any FunctionRegister) instance at the module's top level."""
    apps = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
    if not apps:
        raise HostConfigError(f"{module.__name__} defines no azure.functions.FunctionApp instance")
    if len({id(a) for a in apps}) > 1:
        raise HostConfigError(f"{module.__name__} defines more than one FunctionApp instance")
    return apps[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localdev.host", description=__doc__.split("\n\n")[0])
    parser.add_argument("--app-dir", default=".", help="folder holding function_app.py and host.json (default: .)")
    parser.add_argument(
        "--settings",
        default=None,
        help="local.settings.json to load into the environment (default: APP_DIR/local.settings.json)",
    )
    parser.add_argument("--host-json", default=None, help="host.json to read (default: APP_DIR/host.json)")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("azure").setLevel(logging.WARNING)

    app_dir = Path(args.app_dir).resolve()
    settings_path = Path(args.settings) if args.settings else app_dir / "local.settings.json"
    host_json_path = Path(args.host_json) if args.host_json else app_dir / "host.json"
    try:
        if settings_path.exists():
            count = load_local_settings(settings_path)
            log.info("Loaded %d setting(s) from %s", count, settings_path)
        elif args.settings:
            raise HostConfigError(f"settings file {settings_path} does not exist")
        else:
            log.warning("No %s: using the environment only", settings_path)
        sys.path.insert(0, str(app_dir))
        os.chdir(app_dir)
        module = importlib.import_module("function_app")
        app = find_function_app(module)
        host = LocalHost(app, os.environ, host_json_path if host_json_path.exists() else None)
    except HostConfigError as exc:
        log.error("%s", exc)
        return 2

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("Received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    host.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
