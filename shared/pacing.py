"""Client-side pacing of ARM calls, per subscription, within ARM's documented token buckets.

ARM throttles per subscription and principal: writes 200 with a refill of 10/s, reads 250 with a
refill of 25/s. This process keeps its own calls within those buckets, so that a burst of
requests for one subscription waits here instead of collecting 429s. Other instances of the
app share the principal, so ARM can still answer 429; the app honours its Retry-After.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# ARM's buckets, less a tenth: ARM counts by its own clock and calls arrive with some jitter.
ARM_WRITES = (180, 9.0)  # capacity, refill per second (ARM: 200, 10/s)
ARM_READS = (225, 22.5)  # (ARM: 250, 25/s)


class TokenBucket:
    def __init__(
        self,
        capacity: float,
        refill_per_second: float,
        max_wait: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._capacity = float(capacity)
        self._rate = float(refill_per_second)
        self._max_wait = max_wait
        self._clock = clock
        self._level = float(capacity)
        self._stamp = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take a token; returns how many seconds to wait before using it (0 when one was there).

        Tokens are lent ahead (the level goes below zero, so callers wait in turn) up to `max_wait`;
        past that the caller waits `max_wait` and goes without one.
        """
        with self._lock:
            now = self._clock()
            self._level = min(self._capacity, self._level + (now - self._stamp) * self._rate)
            self._stamp = now
            if self._level >= 1:
                self._level -= 1
                return 0.0
            wait = (1 - self._level) / self._rate
            if wait > self._max_wait:
                return self._max_wait
            self._level -= 1
            return wait


class ArmPacer:
    """One bucket per (kind, subscription); `wait` blocks until the call may go, at most `max_wait`."""

    def __init__(self, writes=ARM_WRITES, reads=ARM_READS, max_wait: float = 30.0, sleep=time.sleep):
        self._limits = {"writes": writes, "reads": reads}
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._lock = threading.Lock()
        self._max_wait = max_wait
        self._sleep = sleep

    def wait(self, kind: str, resource_uri: str | None) -> float:
        """Seconds waited before a `kind` ("writes" or "reads") call for the resource's subscription."""
        key = (kind, subscription_of(resource_uri))
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(*self._limits[kind], self._max_wait)
        delay = bucket.reserve()
        if delay > 0:
            self._sleep(delay)
        return delay


def subscription_of(resource_uri: str | None) -> str:
    parts = (resource_uri or "").split("/")
    return parts[2].lower() if len(parts) > 2 and parts[1].lower() == "subscriptions" else ""
