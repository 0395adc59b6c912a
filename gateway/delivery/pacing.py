"""Pacing per *sender key*, kept by the outbox engine, not by a channel: a token bucket
for each of our numbers, a rolling-window budget for each XMTP client.

Carriers and Twilio queue or drop what a long code sends faster than about one message a
second, so each sender is paced on its own; a busy number never slows another.

XMTP's network counts each client's writes (messages published, groups made, members
changed, installations changed) over a rolling five minutes and answers 429 above its
limit (3,000). A ``WindowBudget`` keeps a client under that count with headroom: a burst
goes out at once while the window has room, then sends wait for the window's oldest
writes to age out. Writes made outside the engine (the API's group changes) reserve from
the same budget (``Pacer`` is shared), so the client's count is one.

Time is the event loop's monotonic clock: pacing is about real seconds, not the domain
clock that tests move by hand.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

# A send one window after another is outside that window by this much at least: where
# exactly a window's edge falls is the network's clock's business, not ours.
_EDGE = 0.001


class Budget(Protocol):
    """What the engine asks of a sender's pacing (``TokenBucket``, ``WindowBudget``)."""

    rate: float  # sends per second, sustained

    def reserve(self) -> float: ...
    def cancel(self) -> None: ...
    def pause(self, seconds: float) -> None: ...
    def paused_for(self) -> float: ...
    def backlog_seconds(self, queued: int) -> float: ...


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


class WindowBudget:
    """At most ``limit`` sends in any ``window`` seconds: a rolling window, the way XMTP
    counts a client's writes. Reservations are kept in order with the time each may go
    (now, or when the send ``limit`` places earlier leaves the window), so a reservation
    never makes a window hold more than ``limit``."""

    def __init__(self, limit: int, window: float, *,
                 now: Callable[[], float] = time.monotonic) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if window <= 0:
            raise ValueError("window must be positive")
        self.limit = limit
        self.window = window
        self.rate = limit / window
        self._now = now
        self._times: collections.deque[float] = collections.deque()  # ascending
        self._paused_until = 0.0
        self.delayed = 0  # reservations that had to wait (for metrics)

    def _forget_old(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()

    def reserve(self) -> float:
        now = self._now()
        self._forget_old(now)
        at = max(now, self._paused_until)
        if self._times:
            at = max(at, self._times[-1])  # first come, first served
        if len(self._times) >= self.limit:
            at = max(at, self._times[-self.limit] + self.window + _EDGE)
        self._times.append(at)
        if at > now:
            self.delayed += 1
        return at - now

    def cancel(self) -> None:
        """Gives back the latest reservation (the engine cancels the ones it just made,
        together, before any other)."""
        if self._times:
            self._times.pop()

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._now() + seconds)

    def paused_for(self) -> float:
        return max(self._paused_until - self._now(), 0.0)

    def used(self) -> int:
        """Sends reserved in the window that ends now (what the network counts)."""
        now = self._now()
        self._forget_old(now)
        return sum(1 for t in self._times if t <= now)

    def backlog_seconds(self, queued: int) -> float:
        """How long until the ``queued``-th send after those reserved may go."""
        if queued <= 0:
            return 0.0
        now = self._now()
        self._forget_old(now)
        if queued > 4 * self.limit:  # far off: the sustained rate says it well enough
            return queued / self.rate
        times = list(self._times)
        at = max(now, self._paused_until)
        for _ in range(queued):  # as ``reserve`` would place them
            if times:
                at = max(at, times[-1])
            if len(times) >= self.limit:
                at = max(at, times[-self.limit] + self.window + _EDGE)
            times.append(at)
        return at - now


@dataclass(frozen=True, slots=True)
class WindowSettings:
    """A rolling-window budget: ``limit`` sends per ``window`` seconds, of which the
    sender uses ``limit * (1 - headroom)`` (room for writes it does not count itself)."""

    limit: int
    window: float
    headroom: float = 0.05

    @property
    def usable(self) -> int:
        return max(1, math.floor(self.limit * (1.0 - self.headroom)))


@dataclass(frozen=True, slots=True)
class PacingSettings:
    """Messages per second for each sender: ``rates`` by sender key, else ``default``
    (None: unpaced); or, with ``window``, a rolling-window budget for every sender."""

    default: float | None = None
    burst: int = 1
    rates: Mapping[str, float] = field(default_factory=dict)
    window: WindowSettings | None = None


class Pacer:
    """The budgets of one engine (and of what shares its senders), made on first use per
    sender key."""

    def __init__(self, settings: PacingSettings, *,
                 now: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._now = now
        self._buckets: dict[str, Budget | None] = {}

    def bucket(self, sender: str) -> Budget | None:
        """The sender's budget; None when it is not paced."""
        if sender not in self._buckets:
            self._buckets[sender] = self._made(sender)
        return self._buckets[sender]

    def _made(self, sender: str) -> Budget | None:
        window = self._settings.window
        if window is not None:
            return WindowBudget(window.usable, window.window, now=self._now)
        rate = self._settings.rates.get(sender, self._settings.default)
        return (TokenBucket(rate, self._settings.burst, now=self._now)
                if rate is not None else None)

    def windows(self) -> dict[str, WindowBudget]:
        """Every sender's rolling-window budget made so far (for metrics)."""
        return {sender: bucket for sender, bucket in self._buckets.items()
                if isinstance(bucket, WindowBudget)}
