"""Ports: what the relay, the delivery engine and the API need from the outside world.

Each is a ``Protocol`` with a real implementation (SQLAlchemy, twilio, libxmtp) and a
test double; the same contract tests run against every implementation.
"""

from gateway.domain.ports.blobs import Blob, BlobStore
from gateway.domain.ports.networks import (
    ChatMessage,
    ChatNetwork,
    OutboundText,
    PhoneNetwork,
    Reference,
    SentText,
)
from gateway.domain.ports.queries import ApiQueries, Slice, TimeRange, Window
from gateway.domain.ports.store import NewMessage, NewParticipant, StatusChange, Store, StoreTx
from gateway.domain.ports.taker import DeliveryTaker, LeaseOffer

__all__ = [
    "ApiQueries", "Blob", "BlobStore", "ChatMessage", "ChatNetwork", "DeliveryTaker",
    "LeaseOffer", "NewMessage",
    "NewParticipant", "OutboundText", "PhoneNetwork", "Reference", "SentText", "Slice",
    "StatusChange",
    "Store", "StoreTx", "TimeRange", "Window",
]
