"""What the worker hands a function besides its trigger: the ``func.Out`` parameter, the
``context`` argument, and ``queue`` output bindings; and :class:`Binding`, one binding as the app
declares it."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Mapping
from typing import Any

import azure.functions as func
from azure.functions.queue import QueueMessageOutConverter

from localdev.functions_host.config import resolve_setting_refs
from localdev.functions_host.connections import Queues, send_message
from localdev.functions_host.messages import MessageCodec


class Out(func.Out):
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


class Context(func.Context):
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
class Binding:
    """One binding a function declares (``get_raw_bindings()``); ``data`` is the whole of it."""

    type: str
    name: str
    direction: str
    data: dict[str, Any]


def queue_binding(function_name: str, binding: Binding, settings: Mapping[str, str]) -> tuple[str, str, str]:
    """A queue binding's place (for errors), queue name and connection name, settings resolved."""
    where = f"function {function_name!r}, binding {binding.name!r}"
    queue_name = resolve_setting_refs(str(binding.data.get("queueName", "")), settings, where=where)
    connection = resolve_setting_refs(str(binding.data.get("connection") or ""), settings, where=where)
    return where, queue_name, connection


class QueueOutput:
    """A ``queue`` output binding: values set on it are sent when the function succeeds."""

    def __init__(
        self, function_name: str, binding: Binding, settings: Mapping[str, str], queues: Queues, codec: MessageCodec
    ) -> None:
        self.param = binding.name
        self.queues = queues
        self.codec = codec
        where, self.queue_name, self.connection = queue_binding(function_name, binding, settings)
        self.client = queues.client(self.connection, self.queue_name, where)

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
            send_message(self.client, self.codec.encode(item))
        self.queues.notify(self.client)
