"""A local stand-in for ``func start``: runs the queue and timer functions of an azure-functions
v2 (decorator model) ``FunctionApp`` against Azurite or any storage account.

It reads the functions and their bindings from the app object itself (``app.get_functions()``),
the queue settings from host.json (``extensions.queues``, ``functionTimeout``) and the app
settings from a mapping, and then behaves like the Functions host's queue listener and timer
listener, handing the function the same ``azure.functions`` objects the Python worker builds::

    from localdev.functions_host import LocalHost
    with LocalHost(app, settings={"AzureWebJobsStorage": conn}, host_json="host.json") as host:
        ...                      # background polling, as under `func start`
    host = LocalHost(app, settings, host_json, overrides={"maxPollingInterval": 200})
    host.deliver_once("my_queue_function")   # one receive + dispatch round, synchronously
    host.fire("my_timer_function")           # one timer run now, synchronously

Command line (loads local.settings.json ``Values`` into the environment, real env wins)::

    python -m localdev.functions_host [--app-dir DIR] [--settings local.settings.json]

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

Modules, one job each: :mod:`.config` (host.json, durations, ``%SETTING%`` references,
local.settings.json), :mod:`.schedule` (NCRONTAB and TimeSpan schedules), :mod:`.connections`
(storage connections and the shared queue clients), :mod:`.messages` (message encoding, trigger
metadata, the visibility lease), :mod:`.bindings` (``func.Out``, ``context``, queue output
bindings), :mod:`.invoker` (running user code within functionTimeout), :mod:`.listeners` (the
queue and timer functions), :mod:`.host` (:class:`LocalHost`) and :mod:`.__main__` (the command
line). The listeners see the host only through :class:`~.listeners.HostServices` (settings,
options, queue clients, message codec, invoker), so nothing below :mod:`.host` imports it.
"""

from __future__ import annotations

from localdev.functions_host.config import (
    HostConfigError,
    HostOptions,
    QueueOptions,
    build_options,
    load_host_json,
    load_local_settings,
    parse_duration,
    resolve_setting_refs,
)
from localdev.functions_host.host import LocalHost, find_function_app
from localdev.functions_host.invoker import FunctionTimeoutError
from localdev.functions_host.listeners import FunctionStats
from localdev.functions_host.schedule import CronSchedule, IntervalSchedule, parse_schedule

__all__ = [
    "CronSchedule",
    "FunctionStats",
    "FunctionTimeoutError",
    "HostConfigError",
    "HostOptions",
    "IntervalSchedule",
    "LocalHost",
    "QueueOptions",
    "build_options",
    "find_function_app",
    "load_host_json",
    "load_local_settings",
    "parse_duration",
    "parse_schedule",
    "resolve_setting_refs",
]
