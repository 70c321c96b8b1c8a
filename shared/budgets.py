"""Every time limit of the app in one place: each outbound call's timeouts and each step's budget.

A call's timeouts fit the budget of the step that makes it, so that a step ends in bounded time
whatever hangs (ARM, the identity endpoint, storage, Event Grid). The README's "Time limits"
section lists the same figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

# Outbound calls: (connect, read) timeouts in seconds.
ARM_TIMEOUT = (5.0, 30.0)  # ARM answers an action or a status read in well under a second
IDENTITY_TIMEOUT = (3.0, 10.0)  # the managed-identity endpoint, one try more on failure
STORAGE_TIMEOUT = (3.0, 5.0)  # queue operations on messages of a few KiB
STORAGE_RETRIES = 1  # one more try after a failed storage call, about a second later
EVENTGRID_TIMEOUT = (3.0, 10.0)

# The longest one storage call can take, its retry included (used to reserve time for writes).
STORAGE_CALL_MAX = (1 + STORAGE_RETRIES) * sum(STORAGE_TIMEOUT) + 2.0


@dataclass(frozen=True)
class Budgets:
    """Step budgets in seconds; tests shrink them to prove that a step ends in time."""

    token_wait: float = 12.0  # a caller waits this long at most for a token being fetched
    pacing_wait: float = 10.0  # the longest wait for ARM's rate limit before a call goes anyway
    submit: float = 150.0  # one delivery of a request (host.json functionTimeout is 10 minutes)
    poll_run: float = 240.0  # one poll run
    poll_lease: float = 120.0  # a taken tracking message stays hidden this long
    outbox_run: float = 30.0  # forwarding waiting events to Event Grid, per poll run
    storage_reserve: float = 3 * STORAGE_CALL_MAX  # kept back from ARM work for the writes that follow


DEFAULT_BUDGETS = Budgets()


class Deadline:
    """A point in time (monotonic clock) by which a piece of work must end."""

    def __init__(self, seconds: float, clock=time.monotonic):
        self._clock = clock
        self._end = clock() + seconds

    @classmethod
    def at(cls, end: float, clock=time.monotonic) -> Deadline:
        deadline = cls(0.0, clock)
        deadline._end = end
        return deadline

    @property
    def end(self) -> float:
        return self._end

    def remaining(self) -> float:
        return max(0.0, self._end - self._clock())

    def earlier(self, seconds_before: float) -> Deadline:
        """The deadline `seconds_before` this one (time kept back for the work that follows)."""
        return Deadline.at(self._end - seconds_before, self._clock)

    def min(self, other: Deadline | None) -> Deadline:
        return self if other is None or self._end <= other.end else other
