"""Who a recorded message must reach: one Delivery per other active participant, on that
participant's channel, created in the caller's transaction (the transactional outbox)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from gateway.domain.models import Channel, Consent, Delivery, Message, MessageSource, Participant
from gateway.domain.ports import StoreTx


def delivery_targets(message: Message, participants: Sequence[Participant]) -> list[Participant]:
    """Every active participant but the author. Wallets are left out when the message
    came from XMTP: they already see it in the conversation's group, and so are wallets
    that denied the conversation. A phone that replied STOP still gets its delivery row:
    the outbox refuses it with a reason and the author is told, instead of silence."""
    targets = []
    for p in participants:
        if not p.active or p.id == message.author:
            continue
        if p.is_chat and p.consent is Consent.DENIED:
            continue
        if p.channel is Channel.XMTP and message.source is MessageSource.XMTP:
            continue
        targets.append(p)
    return targets


async def fan_out(tx: StoreTx, message: Message, *, now: datetime) -> list[Delivery]:
    participants = await tx.list_participants(message.conversation_id)
    return [
        await tx.add_delivery(message.id, p.id, p.channel, now=now)
        for p in delivery_targets(message, participants)
    ]
