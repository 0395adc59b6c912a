"""Pacing per *sender key*: a token bucket for each sender (one of our numbers today, an
XMTP client next), kept by the outbox engine, not by a channel.

Carriers and Twilio queue or drop what a long code sends faster than about one message a
second, so each sender is paced on its own; a busy number never slows another.
Time is the event loop's monotonic clock: pacing is about real seconds, not the domain
clock that tests move by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


class TokenBucket:
    def __init__(self, rate: float, burst: int = 1, *,
                 now: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = rate
        self.burst = burst
        self._now = now
        self._tokens = float(burst)
        self._updated = now()
        self._paused_until = 0.0

    def reserve(self) -> float:
        """Takes a token and returns how many seconds to wait before using it (0 when one
        is available now). Reservations queue up: the n-th waits n/rate."""
        now = self._now()
        self._tokens = min(float(self.burst),
                           self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        self._tokens -= 1.0
        wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        return max(wait, self._paused_until - now)

    def cancel(self) -> None:
        """Gives back the token of a reservation that will not be used."""
        self._tokens = min(float(self.burst), self._tokens + 1.0)

    def pause(self, seconds: float) -> None:
        """Nothing more goes out for ``seconds`` (a provider's Retry-After)."""
        self._paused_until = max(self._paused_until, self._now() + seconds)

    def paused_for(self) -> float:
        """Seconds left of a pause (0 when none): sends already reserved before a pause
        began wait it out too."""
        return max(self._paused_until - self._now(), 0.0)

    def backlog_seconds(self, queued: int) -> float:
        """How long ``queued`` more sends would take at this rate."""
        return queued / self.rate


@dataclass(frozen=True, slots=True)
class PacingSettings:
    """Messages per second for each sender: ``rates`` by sender key, else ``default``
    (None: unpaced)."""

    default: float | None = None
    burst: int = 1
    rates: Mapping[str, float] = field(default_factory=dict)


class Pacer:
    """The buckets of one engine, made on first use per sender key."""

    def __init__(self, settings: PacingSettings, *,
                 now: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._now = now
        self._buckets: dict[str, TokenBucket | None] = {}

    def bucket(self, sender: str) -> TokenBucket | None:
        """The sender's bucket; None when it is not paced."""
        if sender not in self._buckets:
            rate = self._settings.rates.get(sender, self._settings.default)
            self._buckets[sender] = (TokenBucket(rate, self._settings.burst, now=self._now)
                                     if rate is not None else None)
        return self._buckets[sender]
