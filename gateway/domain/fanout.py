"""Who a recorded message must reach: one Delivery per other active participant, on that
participant's channel (``Writer.record`` creates them in the message's transaction: the
transactional outbox)."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.domain.models import Channel, Consent, Message, MessageSource, Participant


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
