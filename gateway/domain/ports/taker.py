"""What the relay hands deliveries claimed at birth to."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from gateway.domain.models import (
    DeliveryJob,
    Participant,
)

# --- workers ---------------------------------------------------------------------------


class DeliveryTaker(Protocol):
    """A channel's delivery worker in this process, taking deliveries claimed at birth:
    the relay creates them already leased to it (``StoreTx.add_delivery(lease_until=…)``)
    and hands them over once the transaction commits, which saves a claim transaction
    and a wake-up on every relayed message. A taker that goes away without sending leaves
    leased rows, which its channel's reconciler takes when the lease runs out, exactly as
    after a claim."""

    def lease_for(self, target: Participant, now: datetime) -> datetime | None:
        """The lease for a delivery to ``target`` this worker will take, or None when it
        has no room for more now (the delivery is then left pending, for a claim)."""

    def take(self, job: DeliveryJob, lease_until: datetime) -> None:
        """A committed delivery claimed at birth under ``lease_until``."""
