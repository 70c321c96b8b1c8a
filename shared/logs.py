"""Log lines of a request carry its requestId and correlationId, whichever module writes them."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from contextvars import ContextVar

_scope: ContextVar[str] = ContextVar("request_log_scope", default="")


@contextmanager
def request_scope(request_id: str | None, correlation_id: str | None = None):
    """Within this block (in this thread), every log line of the app starts with the request's ids."""
    prefix = f"requestId={request_id}"
    if correlation_id:
        prefix += f" correlationId={correlation_id}"
    token = _scope.set(prefix.replace("%", "%%"))  # the prefix joins the log call's format string
    try:
        yield
    finally:
        _scope.reset(token)


class _RequestLogger(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        prefix = _scope.get()
        return (f"{prefix}: {msg}" if prefix else msg), kwargs


def get_logger(name: str) -> logging.LoggerAdapter:
    return _RequestLogger(logging.getLogger(name), {})
