"""The functions the host runs: a timer function (its schedule, the no-overlap slot, past_due)
and a queue function (receive, invoke, then delete, release or poison each message), both built
on :class:`FunctionBase` (arguments in, output bindings out).

A listener gets :class:`HostServices` from the host, never the host itself: the settings and
options, the shared queue clients, the message codec and the invoker."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import inspect
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.functions import meta
from azure.functions.queue import QueueMessageInConverter
from azure.functions.timer import TimerRequestConverter
from azure.storage.queue import QueueClient

from localdev.functions_host.bindings import Binding, Context, Out, QueueOutput, queue_binding
from localdev.functions_host.config import HostConfigError, HostOptions, resolve_setting_refs
from localdev.functions_host.connections import Queues, send_message
from localdev.functions_host.invoker import FunctionTimeoutError, Invoker, describe
from localdev.functions_host.messages import Lease, MessageCodec, queue_trigger_metadata
from localdev.functions_host.schedule import parse_schedule

log = logging.getLogger(__package__)


@dataclasses.dataclass(frozen=True)
class HostServices:
    """What the host lends its functions: app settings (for ``%NAME%`` references), the options
    from host.json, the queue clients, host.json's message encoding and the invoker."""

    settings: Mapping[str, str]
    options: HostOptions
    queues: Queues
    codec: MessageCodec
    invoker: Invoker


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


class FunctionBase:
    def __init__(self, services: HostServices, function: func.Function, bindings: list[Binding]) -> None:
        self.services = services
        self.name: str = function.get_function_name()
        self.user_function: Callable[..., Any] = function.get_user_function()
        self.script_dir = str(Path(inspect.getsourcefile(self.user_function) or ".").resolve().parent)
        self.trigger = next(b for b in bindings if b.type.lower().endswith("trigger"))
        self.outputs: list[QueueOutput] = []
        for binding in bindings:
            if binding is self.trigger:
                continue
            if binding.type == "queue" and binding.direction.upper() == "OUT":
                self.outputs.append(QueueOutput(self.name, binding, services.settings, services.queues, services.codec))
            else:
                raise HostConfigError(
                    f"function {self.name!r}: binding {binding.name!r} of type {binding.type!r} "
                    f"({binding.direction}) is not supported by localdev.functions_host"
                )
        parameters = inspect.signature(self.user_function).parameters
        binding_names = {b.name for b in bindings}
        self.wants_context = "context" in parameters and "context" not in binding_names
        for binding in [self.trigger, *self.outputs]:
            name = binding.name if isinstance(binding, Binding) else binding.param
            if name != "$return" and name not in parameters:
                raise HostConfigError(f"function {self.name!r}: binding {name!r} has no parameter of that name")
        self.stats = FunctionStats()
        self._lock = threading.Lock()  # guards stats (and a timer's past_due state)

    def invoke(self, trigger_value: Any, invocation_id: str) -> None:
        """Run the user function with its arguments, then flush its output bindings."""
        kwargs: dict[str, Any] = {self.trigger.name: trigger_value}
        outs: dict[str, Out] = {}
        for output in self.outputs:
            if output.param != "$return":
                outs[output.param] = kwargs[output.param] = Out()
        if self.wants_context:
            kwargs["context"] = Context(invocation_id, self.name, self.script_dir)
        result = self.services.invoker.call(self.user_function, kwargs)
        for output in self.outputs:
            value = result if output.param == "$return" else outs[output.param].get()
            if value is not None:
                output.send(value)

    def _execute(
        self,
        trigger_value: Any,
        invocation_id: str,
        detail: str = "",
        *detail_args: Any,
        guard: contextlib.AbstractContextManager[Any] | None = None,
        release: Callable[[], None] | None = None,
    ) -> bool:
        """One invocation through the invoker (inside ``guard``), counted, and logged as the host
        logs it: "Executed 'Functions.NAME' (Succeeded|Failed, Id, Duration)" and ``detail``."""
        started = time.monotonic()
        try:
            with guard or contextlib.nullcontext():
                invocation = functools.partial(self.invoke, trigger_value, invocation_id)
                self.services.invoker.run(self.name, invocation, release=release)
        except BaseException as exc:  # noqa: BLE001 - any failure of user code is an outcome
            self._count(ok=False)
            log.error(
                "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)" + detail + ": %s",
                self.name,
                invocation_id,
                (time.monotonic() - started) * 1000,
                *detail_args,
                describe(exc),
                exc_info=not isinstance(exc, FunctionTimeoutError),
            )
            return False
        self._count(ok=True)
        log.info(
            "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)" + detail,
            self.name,
            invocation_id,
            (time.monotonic() - started) * 1000,
            *detail_args,
        )
        return True

    def _count(self, ok: bool) -> None:
        with self._lock:
            self.stats.invocations += 1
            if ok:
                self.stats.successes += 1
            else:
                self.stats.failures += 1


class TimerFunction(FunctionBase):
    def __init__(self, services: HostServices, function: func.Function, bindings: list[Binding]) -> None:
        super().__init__(services, function, bindings)
        where = f"function {self.name!r}, binding {self.trigger.name!r}"
        self.schedule_text = resolve_setting_refs(
            str(self.trigger.data.get("schedule", "")), services.settings, where=where
        )
        try:
            self.schedule = parse_schedule(self.schedule_text)
        except HostConfigError as exc:
            raise HostConfigError(f"{where}: {exc}") from None
        self.run_on_startup = bool(self.trigger.data.get("runOnStartup", False))
        self._run_lock = threading.Lock()
        self._past_due_pending = False
        self.last_run: dt.datetime | None = None

    def try_begin(self) -> bool | None:
        """Claim the no-overlap slot: the past_due flag for this run, or None if one is running."""
        if not self._run_lock.acquire(blocking=False):
            with self._lock:
                self._past_due_pending = True
                self.stats.skipped += 1
            log.warning(
                "Timer '%s': skipped a tick because the previous run is still going (skipped so far: %d)",
                self.name,
                self.stats.skipped,
            )
            return None
        with self._lock:
            past_due, self._past_due_pending = self._past_due_pending, False
        return past_due

    def release_slot(self) -> None:
        """Give back the no-overlap slot claimed with try_begin() for a run that will not happen."""
        self._run_lock.release()

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
        self.last_run = now  # only the next run reads it, and that waits for the slot
        return self._execute(request, invocation_id, release=self._run_lock.release)


class QueueFunction(FunctionBase):
    def __init__(self, services: HostServices, function: func.Function, bindings: list[Binding]) -> None:
        super().__init__(services, function, bindings)
        where, self.queue_name, self.connection = queue_binding(self.name, self.trigger, services.settings)
        self.queue = services.queues.client(self.connection, self.queue_name, where)
        self.poison_queue = services.queues.client(self.connection, f"{self.queue_name}-poison", where)
        self.wake = services.queues.watch(self.queue)

    # -- one message ------------------------------------------------------------------------------
    def receive(self, count: int) -> list[Any]:
        try:
            pages = self.queue.receive_messages(
                messages_per_page=count,
                visibility_timeout=max(1, int(round(self.services.options.processing_visibility_timeout))),
            ).by_page()
            return list(next(pages, []))  # exactly one Get Messages call
        except ResourceNotFoundError:
            log.debug("Queue '%s' for function '%s' does not exist (yet)", self.queue_name, self.name)
            return []

    def process(self, message: Any) -> str:
        """Begin, invoke and complete one received message; returns the outcome."""
        opts = self.services.options.queues
        if message.dequeue_count > opts.max_dequeue_count:  # BeginProcessingMessageAsync
            self._poison(
                message, f"its dequeue count {message.dequeue_count} exceeds maxDequeueCount {opts.max_dequeue_count}"
            )
            return "poisoned"
        try:
            body = self.services.codec.decode(message.content)
        except ValueError as exc:
            self._poison(message, f"it is not valid base64 ({exc}) and messageEncoding is base64")
            return "poisoned"

        invocation_id = str(uuid.uuid4())
        trigger_value = QueueMessageInConverter.decode(
            meta.Datum(body, "bytes"), trigger_metadata=queue_trigger_metadata(message, self.queue_name)
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
        lease = Lease(self.queue, message, self.services.options.processing_visibility_timeout)
        detail = " message_id=%s dequeue_count=%d"
        if not self._execute(trigger_value, invocation_id, detail, message.id, message.dequeue_count, guard=lease):
            if message.dequeue_count >= opts.max_dequeue_count:
                self._poison(
                    message, f"it failed {message.dequeue_count} time(s), maxDequeueCount is {opts.max_dequeue_count}"
                )
                return "poisoned"
            self._release(message, lease.pop_receipt)
            return "failed"
        self._delete(self.queue, message.id, lease.pop_receipt)
        return "succeeded"

    def _poison(self, message: Any, reason: str) -> None:
        log.warning(
            "Message %s on '%s' moved to queue '%s': %s",
            message.id,
            self.queue_name,
            self.poison_queue.queue_name,
            reason,
        )
        # the raw text, as stored (the host copies MessageText with a non-encoding client)
        send_message(self.poison_queue, message.content)
        with self._lock:
            self.stats.poisoned += 1
        self._delete(self.queue, message.id, message.pop_receipt)

    def _release(self, message: Any, pop_receipt: str) -> None:
        visibility = int(round(self.services.options.queues.visibility_timeout))
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
