"""Shared values and small builders for the store contract tests."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.domain.ids import PhoneNumber, WalletAddress
from gateway.domain.models import (
    Channel,
    Conversation,
    Delivery,
    Message,
    MessageSource,
    Participant,
    lane_of,
)
from gateway.domain.ports import NewMessage, NewParticipant, StoreTx
from gateway.store import SqlStore

KEYS = {"k1": secrets.token_bytes(32)}
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)

PHONE = PhoneNumber("+15550100123")
OTHER_PHONE = PhoneNumber("+15550100999")
PROXY = PhoneNumber("+15550200001")
OTHER_PROXY = PhoneNumber("+15550200002")
WALLET = WalletAddress("0x" + "Ab" * 20)
OTHER_WALLET = WalletAddress("0x" + "cD" * 20)

HOLDER = "HOtest"  # the outbox holder the tests claim as

OpenStore = Callable[..., Awaitable[SqlStore]]


@dataclass(frozen=True)
class Thread:
    """A conversation between one phone and one wallet."""

    conversation: Conversation
    phone: Participant
    wallet: Participant


async def thread(tx: StoreTx, *, phone: PhoneNumber = PHONE, rule: str | None = "support",
                 wallet: WalletAddress = WALLET, proxy: PhoneNumber = PROXY) -> Thread:
    conversation = await tx.create_conversation(rule=rule, now=NOW)
    on_phone = await tx.add_participant(NewParticipant(
        conversation.id, Channel.SMS, address=phone, proxy_address=proxy), now=NOW)
    on_wallet = await tx.add_participant(NewParticipant(
        conversation.id, Channel.XMTP, identity=wallet), now=NOW)
    return Thread(conversation, on_phone, on_wallet)


async def wallet_text(tx: StoreTx, on: Thread, body: str = "hello phone", *,
                      external_id: str | None = None) -> tuple[Message, Delivery]:
    """A wallet's message and its delivery to the phone, recorded together."""
    message = await tx.add_message(NewMessage(
        on.conversation.id, on.wallet.id, body, MessageSource.XMTP,
        external_id=external_id or secrets.token_hex(8)), now=NOW)
    delivery = await deliver(tx, message, on.phone)
    return message, delivery


async def deliver(tx: StoreTx, message: Message, target: Participant, *,
                  now: datetime = NOW, not_before: datetime | None = None,
                  holder: str | None = None, lease_until: datetime | None = None) -> Delivery:
    """A delivery of ``message`` to ``target`` in the lane the relay would give it."""
    return await tx.add_delivery(message.id, target.id, target.channel, lane=lane_of(target),
                                 position=message.index, now=now, not_before=not_before,
                                 holder=holder, lease_until=lease_until)
