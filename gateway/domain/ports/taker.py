"""What the relay hands deliveries claimed at birth to: this process's outbox engine for
a channel."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gateway.domain.models import DeliveryJob, Participant


@dataclass(frozen=True, slots=True)
class LeaseOffer:
    """A lease an engine will take a new delivery under: its holder, until when."""

    holder: str
    until: datetime


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

    def take(self, job: DeliveryJob) -> None:
        """A committed delivery claimed at birth (its lease is ``job.lease``)."""
