"""The domain, shaped like Twilio Conversations (see docs/architecture.md).

Frozen dataclasses only: no I/O, no ORM. The store maps these to rows.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.domain.ids import (
    ConversationId,
    DeliveryId,
    MessageId,
    ParticipantId,
    PhoneNumber,
    WalletAddress,
)


class ConversationState(enum.StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    CLOSED = "closed"


class Channel(enum.StrEnum):
    """How a participant is reached. ``xmtp`` is a chat participant (a wallet)."""

    SMS = "sms"
    WHATSAPP = "whatsapp"
    XMTP = "xmtp"

    @property
    def is_phone(self) -> bool:
        return self in PHONE_CHANNELS


# The channels that reach a phone through Twilio, named once.
PHONE_CHANNELS = (Channel.SMS, Channel.WHATSAPP)


class MessageSource(enum.StrEnum):
    SMS = "sms"
    WHATSAPP = "whatsapp"
    XMTP = "xmtp"
    API = "api"
    SYSTEM = "system"  # notices the gateway itself writes (delivery failed, STOP, ...)


class Consent(enum.StrEnum):
    ALLOWED = "allowed"
    UNKNOWN = "unknown"
    DENIED = "denied"


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    UNKNOWN = "unknown"

    @property
    def rank(self) -> int:
        """Progress order: a status may only move to a higher rank (never back)."""
        return _DELIVERY_RANK[self]

    @property
    def is_final(self) -> bool:
        return self in {DeliveryState.DELIVERED, DeliveryState.READ,
                        DeliveryState.UNDELIVERED, DeliveryState.FAILED}

    @property
    def is_failure(self) -> bool:
        """It did not reach its target, for good (the author's side is told)."""
        return self in {DeliveryState.UNDELIVERED, DeliveryState.FAILED}


_DELIVERY_RANK = {
    DeliveryState.PENDING: 0,
    DeliveryState.SENDING: 1,
    DeliveryState.UNKNOWN: 2,
    DeliveryState.SENT: 3,
    DeliveryState.DELIVERED: 4,
    DeliveryState.UNDELIVERED: 4,
    DeliveryState.FAILED: 4,
    DeliveryState.READ: 5,
}


@dataclass(frozen=True, slots=True)
class RemoteReference:
    """How to open what an XMTP remote attachment's URL serves (XMTP's scheme: the
    ciphertext's SHA-256, and the secret, salt and nonce its key and cipher take). Kept
    with the message, sealed like its body, until the phone channel fetches the file."""

    content_digest: str
    secret: bytes = field(repr=False)
    salt: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    scheme: str = "https://"


@dataclass(frozen=True, slots=True)
class Media:
    """One file of a message. A phone's (Twilio's MediaUrl) or an API caller's is a URL
    and its type; a wallet's is described as the chat network gave it: ``filename``,
    ``size`` (the sender's word, advisory), and where the bytes are: ``blob_key`` (the
    gateway stored an inline attachment; ``url`` is then "") or ``remote`` (a remote
    attachment: ``url`` serves its ciphertext). Nobody fetches a URL to describe it."""

    url: str
    content_type: str | None = None
    filename: str | None = None
    size: int | None = None
    blob_key: str | None = None
    remote: RemoteReference | None = None

    @property
    def held(self) -> bool:
        """The file comes from a wallet: the gateway opens it before a phone gets it."""
        return self.blob_key is not None or self.remote is not None


@dataclass(frozen=True, slots=True)
class Conversation:
    id: ConversationId
    unique_name: str | None
    friendly_name: str | None
    attributes: Mapping[str, Any]
    state: ConversationState
    rule: str | None
    xmtp_group_id: str | None
    created_at: datetime
    updated_at: datetime
    last_message_at: datetime | None


@dataclass(frozen=True, slots=True)
class Participant:
    """A chat participant has ``identity`` (a wallet); a non-chat one has ``address``
    (the phone), ``proxy_address`` (our Twilio number) and channel sms/whatsapp."""

    id: ParticipantId
    conversation_id: ConversationId
    channel: Channel
    identity: WalletAddress | None
    address: PhoneNumber | None
    proxy_address: PhoneNumber | None
    consent: Consent
    attributes: Mapping[str, Any]
    joined_at: datetime
    left_at: datetime | None

    @property
    def is_chat(self) -> bool:
        return self.channel is Channel.XMTP

    @property
    def active(self) -> bool:
        return self.left_at is None


@dataclass(frozen=True, slots=True)
class Message:
    id: MessageId
    conversation_id: ConversationId
    index: int
    author: ParticipantId | None  # None for system notices
    body: str | None
    media: tuple[Media, ...]
    attributes: Mapping[str, Any]
    source: MessageSource
    external_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Lease:
    """A claim on a delivery: who holds it (an outbox holder, one per process), the
    fencing token the claim gave the row, and when it runs out. Results are written only
    under ``token``; once another claim took the row, the token no longer matches."""

    holder: str
    token: int
    until: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    id: DeliveryId
    message_id: MessageId
    participant_id: ParticipantId
    channel: Channel
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None
    provider_id: str | None
    error_code: int | None
    error_message: str | None
    created_at: datetime
    updated_at: datetime
    lease: Lease | None = None  # while a process holds it (sending, or being reconciled)


@dataclass(frozen=True, slots=True)
class Contact:
    """What we know of a phone on one of our numbers, across conversations: whether it
    texted in first (SMS-pumping protection), its opt-out state, its WhatsApp window."""

    address: PhoneNumber
    proxy_address: PhoneNumber
    consent: Consent
    first_inbound_at: datetime | None
    last_inbound_at: datetime | None  # WhatsApp's 24-hour window runs from here
    # SMS and WhatsApp are separate addresses (Twilio's "whatsapp:+1…"): their own
    # opt-out, their own first text, their own window
    channel: Channel = Channel.SMS


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """A claimed delivery with everything a sender needs (the body decrypted)."""

    delivery: Delivery
    message: Message
    target: Participant
    conversation: Conversation
    author: Participant | None
    # claimed for reconciling: an earlier attempt's outcome is not known
    reconciling: bool = False

    @property
    def lease(self) -> Lease | None:
        return self.delivery.lease

    @property
    def lane(self) -> str:
        return lane_of(self.target)

    @property
    def position(self) -> int:
        return self.message.index


def lane_of(target: Participant) -> str:
    """The order deliveries keep: a phone's texts one after another (its participant), a
    conversation's posts into its group one after another (the conversation)."""
    return target.conversation_id if target.is_chat else target.id


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the persisted event log (served as server-sent events)."""

    id: int
    type: str  # conversation.added, participant.added, message.added, delivery.updated, ...
    conversation_id: ConversationId | None
    data: Mapping[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
