"""The one retry policy: exponential backoff with full jitter, capped, for a bounded
number of attempts. The outbox engine uses it for every channel (each with its own
numbers from the config), the post-event webhooks and the chat stream's reopening too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 1.0  # seconds; attempt n waits up to base * 2**(n-1)
    cap: float = 300.0  # no wait is longer
    max_attempts: int = 10  # after this many, a retryable error is final (where it may be)

    def ceiling(self, attempt: int) -> float:
        """The longest wait after ``attempt`` (1 for the first): base * 2**(attempt-1),
        capped."""
        return min(self.cap, self.base * 2.0 ** min(max(attempt - 1, 0), 30))

    def delay(self, attempt: int, *, at_least: float = 0.0) -> float:
        """A wait after ``attempt``: uniform in [0, ceiling] (full jitter, so retries of
        many deliveries spread out), never below ``at_least`` (a provider's
        Retry-After)."""
        jittered = random.uniform(0, self.ceiling(attempt))  # noqa: S311 - jitter, not crypto
        return max(jittered, at_least)

    def exhausted(self, attempt: int) -> bool:
        return attempt >= self.max_attempts
