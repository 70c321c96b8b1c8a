"""The retry budget for transient ARM failures: how many tries, and how long to wait between them."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int  # tries before giving up with RetriesExhausted
    base_delay: float  # seconds before the 2nd try; doubles each time (with jitter)
    max_delay: float  # no wait is longer, Retry-After included

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the `failures`-th transient failure in a row (1-based)."""
        if retry_after is not None:
            return min(self.max_delay, retry_after)
        backoff = self.base_delay * (2 ** max(0, failures - 1))
        return min(self.max_delay, backoff * random.uniform(0.8, 1.2))


# Submission: tries within one delivery of the request message; the delivery is then given
# back to the queue (the host redelivers it after host.json's visibilityTimeout) until the
# message's last delivery (maxDequeueCount), which ends in RetriesExhausted.
SUBMIT_RETRY = RetryPolicy(attempts=3, base_delay=2.0, max_delay=30.0)

# Polling: the pause after consecutive transient failures of one operation's status reads
# (Retry-After honoured, at most 5 minutes). `attempts` is not used: POLL_FAILURE_WINDOW_SECONDS
# of nothing but transient failures ends the operation.
POLL_RETRY = RetryPolicy(attempts=0, base_delay=15.0, max_delay=300.0)
