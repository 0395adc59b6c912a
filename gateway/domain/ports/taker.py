"""What the relay hands deliveries claimed at birth to: this process's outbox engine for
a channel."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gateway.domain.models import DeliveryJob, Participant


@dataclass(frozen=True, slots=True)
class LeaseOffer:
    """A lease an engine will take a new delivery under: its holder, until when, and the
    engine's own mark of when it was offered (what it wrote after that, the transaction
    that took the offer may not have seen)."""

    holder: str
    until: datetime
    mark: int = 0


class DeliveryTaker(Protocol):
    """A channel's outbox engine in this process, taking deliveries claimed at birth: the
    relay creates them already leased to it (``StoreTx.add_delivery(holder=…)``) and
    hands them over once the transaction commits, which saves a claim transaction and a
    wake-up on every relayed message. An engine that goes away without sending leaves
    leased rows, which the reconciler takes when the lease runs out or the holder stops
    beating, exactly as after a claim."""

    def lease_for(self, target: Participant, now: datetime) -> LeaseOffer | None:
        """The lease for a delivery to ``target`` this engine will take, or None when it
        has no room for more now (the delivery is then left pending, for a claim)."""

    def take(self, job: DeliveryJob, offer: LeaseOffer) -> None:
        """A committed delivery claimed at birth under ``offer`` (its lease is
        ``job.lease``)."""

    def release(self, offer: LeaseOffer) -> None:
        """An offer not taken: its delivery was not claimed at birth, or its transaction
        rolled back. Every offer ends in ``take`` or here, once."""
