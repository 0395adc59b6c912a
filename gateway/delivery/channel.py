"""What a channel plugs into the outbox engine: a small strategy that sends one claimed
delivery and says what became of it. Everything else — lanes, leases, claims, pacing,
backoff, reconciling, writing results — is the engine's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.domain.models import Channel, DeliveryJob
from gateway.domain.outcomes import Outcome


class PacedOut(Exception):
    """The sender has no turn inside this delivery's lease: the engine hands it back,
    due when the sender has room (``due_in`` seconds from now)."""

    def __init__(self, due_in: float) -> None:
        super().__init__(f"the sender is busy for {due_in:.1f}s")
        self.due_in = due_in


class Pace(Protocol):
    def __call__(self, sends: int, calls: int | None = None) -> Awaitable[Sequence[float]]:
        """Waits for the first of ``sends`` turns of the sender; returns the seconds
        between each turn and the next. ``calls``: how many calls to the provider make
        them (each may take a send's timeout); None: one per turn."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One go at one claimed delivery. ``pace(n)`` waits for the sender's first turn of
    ``n`` (one per message the channel will send; for XMTP, one per write) and returns
    the seconds to wait before each later one; it raises ``PacedOut`` when the turns
    would not fit in the lease. ``pause(seconds)`` stops the whole sender (a provider's
    Retry-After)."""

    job: DeliveryJob
    pace: Pace
    pause: Callable[[float], None]


class DeliveryChannel(Protocol):
    name: str  # "phone", "chat": metrics labels and logs
    channels: tuple[Channel, ...]  # the delivery channels it sends
    # Seconds to let a reconciled batch settle before it is looked at (a request the
    # provider was still working on when the sender gave up lands meanwhile).
    reconcile_settle: float
    # One send covers every delivery of a message (a post into a group is every
    # wallet's): the engine sends one of them and the relay settles the others with it.
    one_send_per_message: bool

    def sender_of(self, job: DeliveryJob) -> str:
        """The pacing key: who sends it (one of our numbers, an XMTP client)."""

    async def deliver(self, attempt: Attempt) -> Outcome:
        """Sends the delivery (or, when ``attempt.job.reconciling``, finds out whether an
        earlier attempt did, and finishes it)."""
