"""Client-side pacing of ARM calls, per subscription, within ARM's documented token buckets.

ARM throttles per subscription and principal: writes 200 with a refill of 10/s, reads 250 with a
refill of 25/s. This process keeps its own calls within those buckets, so that a burst of
requests for one subscription waits here instead of collecting 429s. Other instances of the
app share the principal and so ARM's bucket: each instance also learns from what ARM says of that
bucket (the tokens left, in `x-ms-ratelimit-remaining-subscription-writes`/`-reads`, and a 429's
Retry-After), so that together they stay within it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

# ARM's buckets, less 2%: ARM counts by its own clock and calls arrive with some jitter. What ARM
# says of its bucket (the remaining-tokens headers, 429s) corrects the rest.
ARM_WRITES = (196, 9.8)  # capacity, refill per second (ARM: 200, 10/s)
ARM_READS = (245, 24.5)  # (ARM: 250, 25/s)
LEARNED_MARGIN = 0.1  # of the capacity: kept in ARM's bucket, below what its headers say is left


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
        self._margin = capacity * LEARNED_MARGIN  # other instances draw on ARM's bucket too

    def reserve(self, max_wait: float | None = None) -> float:
        """Take a token; returns how many seconds to wait before using it (0 when one was there).

        Tokens are lent ahead (the level goes below zero, so callers wait in turn) up to `max_wait`
        (the bucket's own when None); past that the caller waits `max_wait` and goes without one.
        """
        limit = self._max_wait if max_wait is None else min(max_wait, self._max_wait)
        with self._lock:
            now = self._clock()
            self._level = min(self._capacity, self._level + (now - self._stamp) * self._rate)
            self._stamp = now
            if self._level >= 1:
                self._level -= 1
                return 0.0
            wait = (1 - self._level) / self._rate
            if wait > limit:
                return limit
            self._level -= 1
            return wait

    def observe(self, remaining: float | None = None, pause: float | None = None) -> None:
        """What ARM said of the bucket it shares with other instances: `remaining` tokens left, or a
        429 asking for a `pause` of that many seconds. The level never stays above what ARM allows."""
        with self._lock:
            now = self._clock()
            self._level = min(self._capacity, self._level + (now - self._stamp) * self._rate)
            self._stamp = now
            if remaining is not None:
                self._level = min(self._level, remaining - self._margin)
            if pause is not None:
                self._level = min(self._level, 1 - pause * self._rate)  # the next caller waits `pause`

    def full_since(self) -> float | None:
        """When the bucket is (or was) full again: from then on it is the same as a new one."""
        with self._lock:
            return self._stamp + (self._capacity - self._level) / self._rate


class ArmPacer:
    """One bucket per (kind, subscription); `wait` blocks until the call may go, at most `max_wait`.

    Memory stays bounded: a bucket that has filled up again is the same as a new one and is
    dropped, and at most `max_buckets` are kept (the least recently used go first).
    """

    def __init__(
        self,
        writes=ARM_WRITES,
        reads=ARM_READS,
        max_wait: float = 30.0,
        sleep=time.sleep,
        max_buckets: int = 2048,
        clock: Callable[[], float] = time.monotonic,
        learn: bool = True,
    ):
        self._limits = {"writes": writes, "reads": reads}
        self._buckets: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()
        self._lock = threading.Lock()
        self._max_wait = max_wait
        self._max_buckets = max_buckets
        self._sleep = sleep
        self._clock = clock
        self._learn = learn  # off only to show, in tests, what learning from ARM is worth

    def __len__(self) -> int:
        return len(self._buckets)

    def wait(self, kind: str, resource_uri: str | None, max_wait: float | None = None) -> float:
        """Seconds waited before a `kind` ("writes" or "reads") call for the resource's subscription."""
        delay = self._bucket(kind, resource_uri).reserve(max_wait)
        if delay > 0:
            self._sleep(delay)
        return delay

    def observe(self, kind: str, resource_uri: str | None, remaining: float | None, pause: float | None) -> None:
        """What ARM's answer said of its `kind` bucket for the resource's subscription (see TokenBucket)."""
        if self._learn and (remaining is not None or pause is not None):
            self._bucket(kind, resource_uri).observe(remaining, pause)

    def _bucket(self, kind: str, resource_uri: str | None) -> TokenBucket:
        key = (kind, subscription_of(resource_uri))
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                self._forget_idle()
                bucket = self._buckets[key] = TokenBucket(*self._limits[kind], self._max_wait, self._clock)
            self._buckets.move_to_end(key)
        return bucket

    def _forget_idle(self) -> None:
        """Drop the least recently used buckets that are full again, and the oldest beyond the cap."""
        now = self._clock()
        while self._buckets:
            key, oldest = next(iter(self._buckets.items()))
            if len(self._buckets) < self._max_buckets and oldest.full_since() > now:
                break
            del self._buckets[key]


def subscription_of(resource_uri: str | None) -> str:
    parts = (resource_uri or "").split("/")
    return parts[2].lower() if len(parts) > 2 and parts[1].lower() == "subscriptions" else ""
