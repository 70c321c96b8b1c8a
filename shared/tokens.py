"""One bearer token per scope, fetched in the background so that no caller waits on a hung endpoint.

A fetch runs in a thread of its own, one at a time. Callers holding a token that is still valid
keep using it while a fresh one is fetched; callers without one wait for the fetch at most a
bounded time. No lock is held while the credential works. Whatever the credential raises, of any
type, ends as `TokenUnavailable` with its message kept (cleaned and bounded).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable

from .cleaning import clean_text
from .logs import get_logger

logger = get_logger(__name__)

REFRESH_MARGIN = 300.0  # a token is renewed this long before it expires
USABLE_MARGIN = 30.0  # ... and still used by waiting callers until this long before
FAILURE_PAUSE = 1.0  # after a failed fetch, callers get its error for this long before a new try
STALE_FETCH = 60.0  # a fetch that has not ended after this long no longer blocks a new one


class TokenUnavailable(Exception):
    """No usable token: the fetch failed, or did not end in time."""


class _Fetch:
    def __init__(self, started: float):
        self.started = started
        self.done = threading.Event()
        self.ended: float | None = None
        self.error: str | None = None


class TokenCache:
    def __init__(self, credential, scope: str, clock: Callable[[], float] = time.time):
        self._credential = credential
        self._scope = scope
        self._clock = clock
        self._lock = threading.Lock()
        self._token = None  # an azure.core AccessToken
        self._fetch: _Fetch | None = None

    def token(self, wait: float) -> str:
        """A bearer token; waits at most `wait` seconds when none is usable, else raises TokenUnavailable."""
        now = self._clock()
        with self._lock:
            token = self._token
            if token is not None and token.expires_on - now > REFRESH_MARGIN:
                return token.token
            fetch = self._fetch
            if fetch is None or (fetch.done.is_set() and (fetch.error is None or now - fetch.ended >= FAILURE_PAUSE)):
                fetch = self._start_fetch(now)
            elif not fetch.done.is_set() and now - fetch.started > STALE_FETCH:
                logger.warning("a token fetch has not ended after %.0f s; starting another", now - fetch.started)
                fetch = self._start_fetch(now)
        if token is not None and token.expires_on - now > USABLE_MARGIN:
            return token.token  # still valid: the fetch goes on in the background
        if not fetch.done.wait(max(0.0, wait)):
            raise TokenUnavailable(f"the managed identity endpoint gave no token within {wait:g} s")
        with self._lock:
            token = self._token
        if token is not None and token.expires_on - self._clock() > USABLE_MARGIN:
            return token.token
        raise TokenUnavailable(fetch.error or "the managed identity endpoint gave no usable token")

    def _start_fetch(self, now: float) -> _Fetch:
        fetch = self._fetch = _Fetch(now)
        # in the context of the request that started it: its log lines carry that request's ids
        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(self._run, fetch), name="token-fetch", daemon=True).start()
        return fetch

    def _run(self, fetch: _Fetch) -> None:
        token, error = None, None
        try:
            token = self._credential.get_token(self._scope)
            if not (isinstance(token.token, str) and token.token and isinstance(token.expires_on, int | float)):
                token, error = None, "the managed identity endpoint answered without a usable token"
        except Exception as exc:  # any failure of the credential is a failed fetch, never a crash
            error = clean_text(f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}", 1024)
        if error:  # before the waiters wake: their own lines come after it
            logger.warning("token fetch failed: %s", error)
        with self._lock:
            if token is not None and (self._token is None or token.expires_on >= self._token.expires_on):
                self._token = token
            fetch.error = error
            fetch.ended = self._clock()
            fetch.done.set()
