"""Running user code: one invocation at a time as the Python worker runs it (``async def``
functions in an event loop of their own), within host.json's ``functionTimeout``."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import threading
from collections.abc import Callable
from typing import Any


class FunctionTimeoutError(TimeoutError):
    """An invocation ran longer than host.json's functionTimeout."""


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Invoker:
    """Calls user functions for the listeners; ``function_timeout`` in seconds, None for no limit."""

    def __init__(self, function_timeout: float | None) -> None:
        self.function_timeout = function_timeout

    def call(self, user_function: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        """The user function's result, for a plain or an ``async def`` function."""
        if inspect.iscoroutinefunction(user_function):
            return asyncio.run(user_function(**kwargs))
        return user_function(**kwargs)

    def run(self, name: str, invocation: Callable[[], None], release: Callable[[], None] | None = None) -> None:
        """Run ``invocation`` (one invocation of function ``name``) in the calling thread, or - with
        functionTimeout - in a thread of its own that is abandoned (not killed: Python cannot) when
        the timeout passes. ``release`` runs when the user code has really finished, even after a
        timeout."""
        timeout = self.function_timeout
        if timeout is None:
            try:
                invocation()
            finally:
                if release:
                    release()
            return
        outcome: dict[str, BaseException | None] = {}
        finished = threading.Event()

        def target() -> None:
            try:
                invocation()
                outcome["error"] = None
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                outcome["error"] = exc
            finally:
                finished.set()
                if release:
                    release()

        threading.Thread(target=target, name=f"invoke-{name}", daemon=True).start()
        if not finished.wait(timeout):
            raise FunctionTimeoutError(
                f"Timeout value of {dt.timedelta(seconds=timeout)} was exceeded by function: Functions.{name}"
            )
        if outcome.get("error") is not None:
            raise outcome["error"]
