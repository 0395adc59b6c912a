"""The one writer of messages and deliveries, inside a store transaction.

Every message the gateway keeps — a phone's text, a wallet's post, an API send, the
gateway's own notices — is recorded here with its deliveries (the transactional outbox),
and every delivery changes state here. Each write announces itself in the event log in
the same transaction, with the record of what it wrote (``message.added`` with its
receipts, ``delivery.updated`` with the delivery, ``participant.*`` and
``conversation.*``), so replaying the log from the start gives back exactly what the API
lists. ``Relay`` opens the transactions and calls this; nothing else writes these rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.domain.fanout import delivery_targets
from gateway.domain.ids import ConversationId
from gateway.domain.models import (
    Channel,
    Consent,
    Conversation,
    ConversationState,
    Delivery,
    DeliveryJob,
    Message,
    MessageSource,
    Participant,
    lane_of,
)
from gateway.domain.ports import DeliveryTaker, LeaseOffer, NewMessage, NewParticipant, StoreTx
from gateway.domain.records import conversation_record, delivery_record, participant_record


@dataclass(frozen=True, slots=True)
class PendingEvent:
    type: str
    conversation_id: ConversationId | None
    data: dict[str, Any]
    now: datetime


@dataclass(slots=True)
class Offered:
    """A lease offer an engine made during a transaction, and the delivery claimed at
    birth under it (None while none, or when it was not claimed)."""

    taker: DeliveryTaker
    offer: LeaseOffer
    job: DeliveryJob | None = None


@dataclass(slots=True)
class AfterCommit:
    """What a transaction collects as it goes: the events it announces (written together,
    last, by ``write_events``: the event log's lock is then held only from there to the
    commit, and never while waiting for another row), and what it leaves for after its
    commit: deliveries claimed at birth to hand to this process's engines, and channels
    whose engines should look for work."""

    events: list[PendingEvent] = field(default_factory=list)
    channels: set[Channel] = field(default_factory=set)
    offers: list[Offered] = field(default_factory=list)  # every lease offer made to it

    async def write_events(self, tx: StoreTx) -> None:
        for event in self.events:
            await tx.add_event(event.type, conversation_id=event.conversation_id,
                               data=event.data, now=event.now)

    def hand_over(self, *, committed: bool) -> None:
        """Ends every offer once: committed, a delivery claimed at birth goes to its
        engine; the other offers (and all of them after a rollback) are released."""
        for offered in self.offers:
            if committed and offered.job is not None:
                offered.taker.take(offered.job, offered.offer)
            else:
                offered.taker.release(offered.offer)
        self.offers.clear()


class Writer:
    def __init__(self, *, takers: Callable[[Channel], DeliveryTaker | None]) -> None:
        self._takers = takers

    # ---- messages -----------------------------------------------------------------------

    async def record(
        self, tx: StoreTx, after: AfterCommit, conversation: Conversation, new: NewMessage,
        *, now: datetime, participants: Sequence[Participant] | None = None,
        targets: Iterable[Participant] | None = None,
    ) -> Message:
        """Records the message with a delivery to each of ``targets`` — by default every
        participant it must reach (``delivery_targets``) — and announces it.
        ``participants``: the conversation's, those who left included, when the caller
        has them."""
        message = await tx.add_message(new, now=now)
        if participants is None:
            participants = await tx.list_participants(conversation.id, include_left=True)
        author = next((p for p in participants if p.id == message.author), None)
        chosen = delivery_targets(message, participants) if targets is None else targets
        receipts = [await self._add_delivery(tx, after, conversation, message, target,
                                             author, now)
                    for target in chosen]
        self.announce(after, "message.added", conversation.id, now, {
            "message_id": message.id, "index": message.index,
            "receipts": [delivery_record(d) for d in receipts]})
        return message

    async def keep(self, tx: StoreTx, after: AfterCommit, conversation: Conversation,
                   new: NewMessage, *, now: datetime) -> Message:
        """Records a message that goes nowhere (a HELP request, a text no rule serves)."""
        return await self.record(tx, after, conversation, new, now=now, targets=())

    async def notice_to_phones(self, tx: StoreTx, after: AfterCommit,
                               conversation: Conversation, text: str, *, now: datetime,
                               phones: Iterable[Participant] | None = None) -> None:
        """The gateway's own message to the conversation's phones (or to ``phones``)."""
        if phones is None:
            phones = await tx.list_participants(conversation.id)
        await self.record(tx, after, conversation, _notice(conversation, text), now=now,
                          targets=[p for p in phones if not p.is_chat and p.active])

    async def notice_to_wallets(self, tx: StoreTx, after: AfterCommit,
                                conversation: Conversation, text: str, *,
                                now: datetime) -> None:
        """The gateway's own message into the conversation's group, for its wallets
        (those that left it, or blocked it, are not posted to)."""
        wallets = [p for p in await tx.list_participants(conversation.id)
                   if p.is_chat and p.consent is not Consent.DENIED]
        await self.record(tx, after, conversation, _notice(conversation, text), now=now,
                          targets=wallets)

    async def _add_delivery(self, tx: StoreTx, after: AfterCommit, conversation: Conversation,
                            message: Message, target: Participant, author: Participant | None,
                            now: datetime) -> Delivery:
        """Claimed at birth when this process's engine for the channel has room (it takes
        the job once the transaction commits) and nothing earlier in its lane is open
        elsewhere; left pending for a claim otherwise. The engines are woken for it when
        it is due now; one born later, behind a lane head that waits (a backoff, a spent
        budget), is not: it goes after the head, whose due time the engine knows already
        (a claim for it now would find nothing)."""
        taker = self._takers(target.channel)
        offer = taker.lease_for(target, now) if taker is not None else None
        offered = None
        if taker is not None and offer is not None:
            offered = Offered(taker, offer)  # ended by hand_over, whatever happens
            after.offers.append(offered)
        delivery = await tx.add_delivery(
            message.id, target.id, target.channel, lane=lane_of(target),
            position=message.index, now=now,
            holder=offer.holder if offer else None, lease_until=offer.until if offer else None)
        if offered is not None and delivery.lease is not None:
            offered.job = DeliveryJob(
                delivery=delivery, message=message, target=target, conversation=conversation,
                author=author)
        elif delivery.next_attempt_at is None or delivery.next_attempt_at <= now:
            after.channels.add(target.channel)
        return delivery

    # ---- deliveries ---------------------------------------------------------------------

    async def moved(self, tx: StoreTx, after: AfterCommit, conversation_id: ConversationId,
                    deliveries: Iterable[Delivery], now: datetime) -> None:
        """Announces deliveries just written (one event each)."""
        for delivery in deliveries:
            self.announce(after, "delivery.updated", conversation_id, now, {
                "delivery_id": delivery.id, "message_id": delivery.message_id,
                "participant_id": delivery.participant_id, "state": delivery.state.value,
                "error_code": delivery.error_code, "delivery": delivery_record(delivery)})

    # ---- conversations and participants ---------------------------------------------------

    async def open_conversation(
        self, tx: StoreTx, after: AfterCommit, *, rule: str | None, friendly_name: str,
        state: ConversationState, members: Sequence[NewParticipant], now: datetime,
    ) -> tuple[Conversation, list[Participant]]:
        """A new conversation with its first participants (``conversation_id`` of each is
        filled in), announced."""
        conversation = await tx.create_conversation(rule=rule, friendly_name=friendly_name,
                                                    now=now)
        if state is not ConversationState.ACTIVE:
            conversation = await tx.set_conversation_state(conversation.id, state, now=now)
        await self.conversation_event(tx, after, "conversation.added", conversation, now)
        added = [await self.add_participant(
                     tx, after, NewParticipant(**{**_fields(member),
                                                  "conversation_id": conversation.id}),
                     now=now)
                 for member in members]
        return conversation, added

    async def add_participant(self, tx: StoreTx, after: AfterCommit, new: NewParticipant, *,
                              now: datetime) -> Participant:
        participant = await tx.add_participant(new, now=now)
        await self.participant_event(tx, after, "participant.added", participant, now)
        return participant

    async def remove_participant(self, tx: StoreTx, after: AfterCommit,
                                 participant: Participant, *, now: datetime) -> None:
        await tx.remove_participant(participant.id, now=now)
        left = await tx.get_participant(participant.id)
        assert left is not None
        await self.participant_event(tx, after, "participant.removed", left, now)

    async def set_consent(self, tx: StoreTx, after: AfterCommit, participant: Participant,
                          consent: Consent, *, now: datetime) -> None:
        if participant.consent is consent:
            return
        await tx.set_participant_consent(participant.id, consent)
        changed = await tx.get_participant(participant.id)
        assert changed is not None
        await self.participant_event(tx, after, "participant.updated", changed, now)

    async def set_state(self, tx: StoreTx, after: AfterCommit, conversation: Conversation,
                        state: ConversationState, *, now: datetime) -> Conversation:
        changed = await tx.set_conversation_state(conversation.id, state, now=now)
        await self.conversation_event(tx, after, "conversation.updated", changed, now,
                                      changed_fields=["state"])
        return changed

    async def set_group(self, tx: StoreTx, after: AfterCommit, conversation: Conversation,
                        group_id: str, *, now: datetime) -> Conversation:
        """Raises ``Conflict`` as ``StoreTx.set_conversation_group`` does."""
        await tx.set_conversation_group(conversation.id, group_id)
        changed = await tx.get_conversation(conversation.id)
        assert changed is not None
        await self.conversation_event(tx, after, "conversation.updated", changed, now,
                                      changed_fields=["xmtp_group_id"])
        return changed

    # ---- the event log ------------------------------------------------------------------

    async def conversation_event(self, tx: StoreTx, after: AfterCommit, type_: str,
                                 conversation: Conversation, now: datetime, *,
                                 changed_fields: Sequence[str] | None = None) -> None:
        data: dict[str, Any] = {"conversation": conversation_record(conversation)}
        if changed_fields is not None:
            data["changed"] = sorted(changed_fields)
        self.announce(after, type_, conversation.id, now, data)

    async def participant_event(self, tx: StoreTx, after: AfterCommit, type_: str,
                                participant: Participant, now: datetime) -> None:
        self.announce(after, type_, participant.conversation_id, now, {
            "participant_id": participant.id, "participant": participant_record(participant)})

    @staticmethod
    def announce(after: AfterCommit, type_: str, conversation_id: ConversationId | None,
                 now: datetime, data: dict[str, Any]) -> None:
        """An event of this transaction, written with the others just before its commit."""
        after.events.append(PendingEvent(type_, conversation_id, data, now))


def _notice(conversation: Conversation, text: str) -> NewMessage:
    return NewMessage(conversation_id=conversation.id, author=None, body=text,
                      source=MessageSource.SYSTEM)


def _fields(member: NewParticipant) -> dict[str, Any]:
    return {name: getattr(member, name) for name in member.__dataclass_fields__}
