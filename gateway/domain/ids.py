"""Typed identifiers. Ids we mint are Twilio-shaped: a two-letter prefix and 32 hex digits."""

from __future__ import annotations

import secrets
from typing import NewType

WalletAddress = NewType("WalletAddress", str)
"""An Ethereum address in EIP-55 checksum form."""

PhoneNumber = NewType("PhoneNumber", str)
"""A phone number in E.164 form, without any ``whatsapp:`` prefix."""

ConversationId = NewType("ConversationId", str)
ParticipantId = NewType("ParticipantId", str)
MessageId = NewType("MessageId", str)
DeliveryId = NewType("DeliveryId", str)


def _mint(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def new_conversation_id() -> ConversationId:
    return ConversationId(_mint("CH"))


def new_participant_id() -> ParticipantId:
    return ParticipantId(_mint("MB"))


def new_message_id() -> MessageId:
    return MessageId(_mint("IM"))


def new_delivery_id() -> DeliveryId:
    return DeliveryId(_mint("DY"))
