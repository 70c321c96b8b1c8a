"""Random faults for chaos runs against the ARM emulator.

``arm.chaos = Chaos(seed=7, error_rate=0.10, ...)`` makes every deleteCheckpoint POST, status GET
and VM instance GET (once its method, token and api-version have passed, and after the throttle
bucket) draw from one seeded random generator:

- ``error_rate``: a 5xx answer, one of: 500 without body; 500 with an ErrorResponse and
  ``Retry-After``; 502 without body; 503 with an ErrorResponse and ``Retry-After``; 504 with a
  ``GatewayTimeout`` ErrorResponse. All are transient by the contract, never an operation's failure;
- ``throttle_rate``: the start of a 429 burst for the request's subscription: every call of that
  subscription gets 429 + ``Retry-After`` (the burst's time left, within 1..3 s) +
  ``TooManyRequests`` for ``throttle_burst_seconds``, without a draw of its own;
- ``slow_rate``: the request is processed, then the answer waits ``slow_seconds``;
- ``reset_rate``: the connection is closed before the request is processed;
- ``lost_rate``: the request is processed, then the connection is closed without an answer.

Chaos answers are answers ARM can give, so they are never violations. :meth:`ChaosInjector.counts`
tells how many of each kind were injected (``arm.chaos_counts``).
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass

from localdev.arm_common import Reply

__all__ = ["CHAOS_KINDS", "Chaos", "ChaosInjector"]

CHAOS_KINDS = ("error", "throttle", "slow", "reset", "lost")


@dataclass(frozen=True)
class Chaos:
    """Rates (0..1, summing to at most 1) of each random fault, and its parameters."""

    seed: int | None = None
    error_rate: float = 0.10
    throttle_rate: float = 0.02
    throttle_burst_seconds: float = 5.0
    slow_rate: float = 0.02
    slow_seconds: float = 5.0
    reset_rate: float = 0.02
    lost_rate: float = 0.02

    def __post_init__(self) -> None:
        rates = self.rates()
        if any(not 0.0 <= r <= 1.0 for r in rates.values()):
            raise ValueError(f"Chaos rates must be within 0..1: {rates}")
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"Chaos rates must sum to at most 1: {rates}")
        if self.throttle_burst_seconds < 0 or self.slow_seconds < 0:
            raise ValueError("throttle_burst_seconds / slow_seconds must be >= 0")

    def rates(self) -> dict[str, float]:
        return {
            "error": self.error_rate,
            "throttle": self.throttle_rate,
            "slow": self.slow_rate,
            "reset": self.reset_rate,
            "lost": self.lost_rate,
        }


def _retry_after(seconds_left: float) -> int:
    """The burst's time left, as whole seconds within 1..3."""
    return min(3, max(1, math.ceil(seconds_left)))


def _throttled(retry_after: int, subscription: str) -> Reply:
    reply = Reply.error(
        429,
        "TooManyRequests",
        f"The request for subscription '{subscription}' is being throttled (emulated chaos).",
    )
    reply.headers.append(("Retry-After", str(retry_after)))
    return reply


def _server_error(variant: int, retry_after: int) -> Reply:
    if variant == 0:
        return Reply(status=500)
    if variant == 1:
        reply = Reply.error(500, "InternalServerError", "An internal error occurred (emulated chaos).")
    elif variant == 2:
        return Reply(status=502)
    elif variant == 3:
        reply = Reply.error(503, "ServiceUnavailable", "The service is unavailable (emulated chaos).")
    else:
        return Reply.error(504, "GatewayTimeout", "The gateway did not receive a response in time (emulated chaos).")
    reply.headers.append(("Retry-After", str(retry_after)))
    return reply


class ChaosInjector:
    """The draws of one :class:`Chaos` (thread-safe), its throttle bursts and the counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._config: Chaos | None = None
        self._rng = random.Random()
        self._bursts: dict[str, float] = {}  # subscription -> time.monotonic() the burst ends
        self._counts = dict.fromkeys(CHAOS_KINDS, 0)

    @property
    def config(self) -> Chaos | None:
        return self._config

    def configure(self, chaos: Chaos | None) -> None:
        """Use ``chaos`` from now on (re-seeded; running bursts end); ``None`` turns chaos off."""
        if chaos is not None and not isinstance(chaos, Chaos):
            raise TypeError("chaos must be a Chaos or None")
        with self._lock:
            self._config = chaos
            self._rng = random.Random(chaos.seed if chaos else None)
            self._bursts.clear()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def clear(self) -> None:
        """Forget the counts and the running bursts; the configuration stays."""
        with self._lock:
            self._counts = dict.fromkeys(CHAOS_KINDS, 0)
            self._bursts.clear()

    def draw(self, subscription: str) -> tuple[str, Reply | None] | None:
        """None (no chaos), or the kind injected and the answer to give instead of processing the
        request (None for "slow" and "lost": process it, then :meth:`finish` the answer)."""
        with self._lock:
            cfg = self._config
            if cfg is None:
                return None
            now = time.monotonic()
            until = self._bursts.get(subscription, 0.0)
            if until > now:  # no draw: the sequence of draws depends only on the calls that draw
                self._counts["throttle"] += 1
                return "throttle", _throttled(_retry_after(until - now), subscription)
            x = self._rng.random()
            kind = None
            for name, rate in cfg.rates().items():
                if x < rate:
                    kind = name
                    break
                x -= rate
            if kind is None:
                return None
            self._counts[kind] += 1
            if kind == "error":
                return kind, _server_error(self._rng.randrange(5), self._rng.randint(1, 3))
            if kind == "throttle":
                self._bursts[subscription] = now + cfg.throttle_burst_seconds
                return kind, _throttled(_retry_after(cfg.throttle_burst_seconds), subscription)
            if kind == "reset":
                return kind, Reply(drop=True)
            return kind, None

    def finish(self, kind: str | None, reply: Reply) -> None:
        """Apply a "slow" or "lost" draw to the answer of the processed request."""
        if kind == "slow":
            cfg = self._config
            reply.delay += cfg.slow_seconds if cfg else 0.0
        elif kind == "lost":
            reply.drop = True
