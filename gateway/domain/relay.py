"""The relay: where a message from either side is recorded, routed and put in the outbox.

Every entry point does its work in one store transaction (verify → **record** →
acknowledge → deliver): the message, the routing decision and the deliveries commit
together or not at all, and a repeated message (same source and external id) is
recognised and answered as already done. Sending happens later, in the workers.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import phonenumbers

from gateway.domain.clock import Clock
from gateway.domain.fanout import delivery_targets
from gateway.domain.ids import ConversationId, PhoneNumber, WalletAddress
from gateway.domain.keywords import Keyword, classify
from gateway.domain.models import (
    Channel,
    Consent,
    Conversation,
    ConversationState,
    Delivery,
    DeliveryJob,
    DeliveryState,
    Media,
    Message,
    MessageSource,
    Participant,
)
from gateway.domain.phones import mask
from gateway.domain.ports import (
    ChatMessage,
    DeliveryTaker,
    NewMessage,
    NewParticipant,
    Store,
    StoreTx,
)
from gateway.domain.rules import Rule, RuleBook, RuleMode, short_address
from gateway.errors import ActivePairConflict, DuplicateMessage

log = logging.getLogger(__name__)

DIAL_PROMPT = "Text a wallet address (0x…) or a name, then your message, to start a chat."
NOT_TEXT_NOTICE = ("This message was not delivered: only text can be sent to {phone}; "
                   "{kind} messages cannot be carried by SMS.")
DEFAULT_HELP = "Reply STOP to stop receiving texts, START to receive them again."
CLOSED_NOTICE = "This conversation is closed; the phone can no longer receive messages here."


@dataclass(frozen=True, slots=True)
class PhoneText:
    """A text a phone sent to one of our numbers, as the Twilio adapter parsed it."""

    external_id: str  # Twilio's MessageSid
    from_: PhoneNumber
    to: PhoneNumber
    channel: Channel
    body: str
    media: tuple[Media, ...] = ()


class Outcome(enum.StrEnum):
    """What became of an inbound message (a metrics label, and what tests assert on)."""

    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    UNROUTED = "unrouted"  # no rule for this number and channel: kept, not delivered
    REFUSED = "refused"  # the rule's allow/deny lists turned the phone away
    OPTED_OUT = "opted_out"
    OPTED_IN = "opted_in"
    HELP = "help"
    PROMPTED = "prompted"  # dial mode without a wallet named: the phone is asked to name one
    IGNORED = "ignored"  # a chat message in a group that is not one of ours


# What STOP-family and START keywords do: the consent they set, and what the wallets see.
_CONSENT_KEYWORDS = {
    Keyword.STOP: (Consent.DENIED, Outcome.OPTED_OUT,
                   "{phone} replied {word}: no more texts will reach them until they reply "
                   "START."),
    Keyword.START: (Consent.ALLOWED, Outcome.OPTED_IN,
                    "{phone} replied {word}: texts reach them again."),
}


@dataclass(slots=True)
class _Wake:
    """What a transaction left for the workers: channels with pending deliveries to wake,
    and deliveries claimed at birth to hand over (both only once it has committed)."""

    channels: set[Channel] = field(default_factory=set)
    taken: list[tuple[DeliveryTaker, DeliveryJob, datetime]] = field(default_factory=list)


class Relay:
    def __init__(
        self,
        store: Store,
        rules: RuleBook,
        clock: Clock,
        *,
        wake: Callable[[set[Channel]], None] = lambda _channels: None,
        takers: Callable[[Channel], DeliveryTaker | None] = lambda _channel: None,
    ) -> None:
        self._store = store
        self._rules = rules
        self._clock = clock
        self._wake = wake
        self._takers = takers

    # ---- phone → gateway ----------------------------------------------------------------

    async def receive_phone_text(self, text: PhoneText) -> Outcome:
        """Records an inbound SMS/WhatsApp message and what it causes. Safe to call again
        with the same text (Twilio retries): the second call changes nothing."""
        for attempt in range(3):
            woken = _Wake()
            try:
                async with self._store.transaction() as tx:
                    outcome = await self._phone_text(tx, text, woken)
            except DuplicateMessage:
                return Outcome.DUPLICATE
            except ActivePairConflict:
                # Two first texts from the same phone raced to open a conversation; the
                # other one won, so this one now finds it.
                if attempt == 2:
                    raise
                continue
            self._settle(woken)
            return outcome
        raise AssertionError("unreachable")

    async def _phone_text(self, tx: StoreTx, text: PhoneText, woken: _Wake) -> Outcome:
        source = MessageSource(text.channel.value)
        if await tx.find_message(source, text.external_id) is not None:
            return Outcome.DUPLICATE
        now = self._clock.now()
        keyword = classify(text.body)
        rule = self._rules.match(text.to, text.channel)
        # STOP and START are honoured before anything else: whatever the rules say of
        # this phone, a carrier keyword changes what may be sent to it.
        if keyword in _CONSENT_KEYWORDS:
            await tx.record_inbound(text.from_, text.to, text.channel, now=now)
            consent, outcome, notice = _CONSENT_KEYWORDS[keyword]
            await tx.set_contact_consent(text.from_, text.to, consent, text.channel, now=now)
            existing = await tx.find_phone_participant(text.from_, text.to, text.channel)
            if existing is not None:
                await tx.set_participant_consent(existing.id, consent)
                conversation = await _conversation(tx, existing.conversation_id)
                await self._record(tx, conversation, existing, text, source, woken, now)
                await self._notice_to_wallets(tx, conversation, notice.format(
                    phone=_pretty(text.from_), word=text.body.strip().upper()), woken, now)
            return outcome
        if rule is None:
            existing = await tx.find_phone_participant(text.from_, text.to, text.channel)
            if existing is not None:
                # No rule serves this number and channel (any more), but the phone is in
                # a conversation through it (the API made it, or a rule since changed):
                # the text belongs there.
                await tx.record_inbound(text.from_, text.to, text.channel, now=now)
                conversation = await _conversation(tx, existing.conversation_id)
                await self._record(tx, conversation, existing, text, source, woken, now)
                return Outcome.RECORDED
            log.warning("inbound text from %s to %s matches no rule; kept unrouted",
                        mask(text.from_), text.to)
            conversation, phone = await self._open_conversation(tx, None, text, [], now)
            await self._record(tx, conversation, phone, text, source, woken, now)
            return Outcome.UNROUTED
        refusal = self._rules.screen(rule, text.from_)
        if refusal is not None:
            log.info("inbound text from %s refused by rule %s: %s",
                     mask(text.from_), rule.name, refusal)
            return Outcome.REFUSED

        await tx.record_inbound(text.from_, text.to, text.channel, now=now)
        existing = await tx.find_phone_participant(text.from_, text.to, text.channel)

        if keyword is Keyword.HELP:
            if existing is None:
                conversation, existing = await self._open_conversation(
                    tx, rule, text, [], now, state=ConversationState.INACTIVE)
            else:
                conversation = await _conversation(tx, existing.conversation_id)
            # Kept (not relayed), so a webhook Twilio retries is a duplicate, not a
            # second help text.
            await tx.add_message(NewMessage(
                conversation_id=conversation.id, author=existing.id, body=text.body,
                source=source, external_id=text.external_id, media=text.media), now=now)
            await self._notice_to_phone(
                tx, conversation, existing, rule.help_text or DEFAULT_HELP, woken, now)
            return Outcome.HELP

        body = text.body
        if rule.mode is RuleMode.DIAL:
            dial = self._rules.parse_dial(text.body)
            if dial is not None:
                body = dial.rest
                if existing is not None:
                    conversation = await _conversation(tx, existing.conversation_id)
                    wallets = {p.identity for p in await tx.list_participants(conversation.id)
                               if p.identity is not None}
                    if wallets != {dial.wallet}:
                        await tx.set_conversation_state(
                            conversation.id, ConversationState.CLOSED, now=now)
                        existing = None
                if existing is None:
                    # No greeting: a dial rule's is what a phone that named nobody is told.
                    conversation, existing = await self._open_conversation(
                        tx, rule, text, [dial.wallet], now)
                if not body and not text.media:
                    return Outcome.RECORDED
            elif existing is None:
                conversation, phone = await self._open_conversation(
                    tx, rule, text, [], now, state=ConversationState.INACTIVE)
                await self._record(tx, conversation, phone, text, source, woken, now)
                await self._notice_to_phone(
                    tx, conversation, phone, rule.greeting or DIAL_PROMPT, woken, now)
                return Outcome.PROMPTED
        elif existing is None:
            conversation, existing = await self._open_conversation(
                tx, rule, text, list(rule.wallets), now)
            if rule.greeting:
                await self._notice_to_phone(tx, conversation, existing, rule.greeting, woken,
                                            now)

        assert existing is not None
        conversation = await _conversation(tx, existing.conversation_id)
        await self._record(tx, conversation, existing, text, source, woken, now, body=body)
        return Outcome.RECORDED

    async def _open_conversation(
        self, tx: StoreTx, rule: Rule | None, text: PhoneText, wallets: Sequence[WalletAddress],
        now: datetime, *, state: ConversationState = ConversationState.ACTIVE,
    ) -> tuple[Conversation, Participant]:
        conversation = await tx.create_conversation(
            rule=rule.name if rule else None, friendly_name=group_name(text.channel, text.from_),
            now=now)
        if state is not ConversationState.ACTIVE:
            conversation = await tx.set_conversation_state(conversation.id, state, now=now)
        contact = await tx.get_contact(text.from_, text.to, text.channel)
        phone = await tx.add_participant(NewParticipant(
            conversation_id=conversation.id, channel=text.channel, address=text.from_,
            proxy_address=text.to,
            consent=contact.consent if contact is not None else Consent.ALLOWED,
        ), now=now)
        for wallet in wallets:
            await tx.add_participant(NewParticipant(
                conversation_id=conversation.id, channel=Channel.XMTP, identity=wallet,
                consent=Consent.ALLOWED), now=now)
        await tx.add_event("conversation.added", conversation_id=conversation.id,
                           data={"rule": conversation.rule}, now=now)
        return conversation, phone

    async def _record(
        self, tx: StoreTx, conversation: Conversation, author: Participant, text: PhoneText,
        source: MessageSource, woken: _Wake, now: datetime, *, body: str | None = None,
    ) -> Message:
        message = await tx.add_message(NewMessage(
            conversation_id=conversation.id, author=author.id,
            body=text.body if body is None else body, source=source,
            external_id=text.external_id, media=text.media), now=now)
        await self._deliver(tx, conversation, message, woken, now)
        return message

    # ---- wallet → gateway ---------------------------------------------------------------

    async def receive_chat_message(self, chat: ChatMessage) -> Outcome:
        """Records a message a wallet sent into one of the gateway's groups."""
        woken = _Wake()
        try:
            async with self._store.transaction() as tx:
                outcome = await self._chat_message(tx, chat, woken)
        except DuplicateMessage:
            return Outcome.DUPLICATE
        self._settle(woken)
        return outcome

    async def _chat_message(self, tx: StoreTx, chat: ChatMessage, woken: _Wake) -> Outcome:
        conversation = await tx.get_conversation_by_group(chat.group_id)
        if conversation is None:
            return Outcome.IGNORED
        await tx.set_cursor(chat.group_id, chat.sent_at_ns)
        if await tx.find_message(MessageSource.XMTP, chat.message_id) is not None:
            return Outcome.DUPLICATE
        now = self._clock.now()
        participants = await tx.list_participants(conversation.id, include_left=True)
        author = next((p for p in participants if p.identity == chat.sender), None)
        attributes: dict[str, Any] = {"wallet": chat.sender}
        if chat.text is None:
            attributes["content_type"] = chat.content_type
        message = await tx.add_message(NewMessage(
            conversation_id=conversation.id, author=author.id if author else None,
            body=chat.text, source=MessageSource.XMTP, external_id=chat.message_id,
            attributes=attributes), now=now)
        if conversation.state is not ConversationState.ACTIVE:
            await self._notice_to_wallets(tx, conversation, CLOSED_NOTICE, woken, now)
        elif chat.text is None:
            phones = [p for p in participants if p.active and not p.is_chat]
            await self._notice_to_wallets(tx, conversation, NOT_TEXT_NOTICE.format(
                phone=", ".join(_pretty(p.address) for p in phones if p.address) or "the phone",
                kind=chat.content_type), woken, now)
        else:
            await self._deliver(tx, conversation, message, woken, now, participants)
        return Outcome.RECORDED

    # ---- notices ------------------------------------------------------------------------

    async def delivery_failed(self, job: DeliveryJob, code: int | None, reason: str) -> None:
        """A text to a phone was refused or failed for good: its author's side is told
        in the conversation's group. Notices about notices are not sent."""
        if job.target.is_chat or job.message.source is MessageSource.SYSTEM:
            return
        woken = _Wake()
        async with self._store.transaction() as tx:
            conversation = await _conversation(tx, job.conversation.id)
            phone = _pretty(job.target.address) if job.target.address else "the phone"
            detail = f" (error {code})" if code is not None else ""
            await self._notice_to_wallets(
                tx, conversation, f"Not delivered to {phone}: {reason}{detail}.", woken,
                self._clock.now())
        self._settle(woken)

    async def phone_status(
        self, provider_id: str, state: DeliveryState, *, error_code: int | None,
        error_message: str | None,
    ) -> Delivery | None:
        """A status callback for a text we sent. A failure is reported to the author's
        side once: only by the callback that moved the delivery into it (Twilio may send
        one again). A callback that arrives before the send's own response is kept by
        the store and applied when the provider id is recorded."""
        async with self._store.transaction() as tx:
            change = await tx.record_status(
                provider_id, state, error_code=error_code, error_message=error_message,
                now=self._clock.now())
            if change is None or not change.moved:  # kept for later, or nothing new
                return change.delivery if change else None
            delivery = change.delivery
            failed = state.is_failure and delivery.state is state
            # Status callbacks come two or three per text: the whole job is loaded only
            # for the failure notice, the event needs just the conversation.
            job = await load_job(tx, delivery) if failed else None
            message = job.message if job else await tx.get_message(delivery.message_id)
            assert message is not None, delivery.id
            await tx.add_event("delivery.updated", conversation_id=message.conversation_id,
                               data=delivery_event(delivery), now=self._clock.now())
        if job is not None:
            await self.delivery_failed(job, error_code, error_message or f"message {state}")
        return delivery

    async def wallet_unreachable(self, conversation_id: ConversationId,
                                 wallet: WalletAddress) -> None:
        """The conversation's wallet is not on XMTP: the phone is told so."""
        woken = _Wake()
        async with self._store.transaction() as tx:
            conversation = await _conversation(tx, conversation_id)
            now = self._clock.now()
            await self._notice_to_phones(
                tx, conversation, await tx.list_participants(conversation.id),
                f"Sorry, {short_address(wallet)} cannot receive messages: that wallet "
                "is not on XMTP.", woken, now)
        self._settle(woken)

    async def wallets_left_out(self, conversation_id: ConversationId,
                               wallets: Sequence[WalletAddress]) -> None:
        """The conversation's group was made without these wallets, which are not on
        XMTP: they leave the conversation, the phone is told, and so are the wallets
        in the group."""
        woken = _Wake()
        async with self._store.transaction() as tx:
            conversation = await _conversation(tx, conversation_id)
            now = self._clock.now()
            participants = await tx.list_participants(conversation.id)
            for p in participants:
                if p.identity in wallets:
                    await tx.remove_participant(p.id, now=now)
                    await tx.add_event("participant.removed", conversation_id=conversation.id,
                                       data={"participant_id": p.id}, now=now)
            names = ", ".join(short_address(w) for w in wallets)
            one = len(wallets) == 1
            await self._notice_to_phones(
                tx, conversation, participants,
                f"Sorry, {names} cannot receive messages: not on XMTP. The others in this "
                "conversation get your texts.", woken, now)
            await self._notice_to_wallets(
                tx, conversation, f"{names} {'is' if one else 'are'} not on XMTP and "
                f"{'was' if one else 'were'} left out of this conversation.", woken, now)
        self._settle(woken)

    async def _notice_to_phone(self, tx: StoreTx, conversation: Conversation,
                               phone: Participant, text: str, woken: _Wake,
                               now: datetime) -> None:
        message = await tx.add_message(NewMessage(
            conversation_id=conversation.id, author=None, body=text,
            source=MessageSource.SYSTEM), now=now)
        await self._add_delivery(tx, conversation, message, phone, None, woken, now)

    async def _notice_to_phones(self, tx: StoreTx, conversation: Conversation,
                                participants: Sequence[Participant], text: str,
                                woken: _Wake, now: datetime) -> None:
        for phone in participants:
            if not phone.is_chat:
                await self._notice_to_phone(tx, conversation, phone, text, woken, now)

    async def _notice_to_wallets(self, tx: StoreTx, conversation: Conversation, text: str,
                                 woken: _Wake, now: datetime) -> None:
        message = await tx.add_message(NewMessage(
            conversation_id=conversation.id, author=None, body=text,
            source=MessageSource.SYSTEM), now=now)
        for p in await tx.list_participants(conversation.id):
            if p.is_chat and p.consent is not Consent.DENIED:
                await self._add_delivery(tx, conversation, message, p, None, woken, now)

    async def _deliver(self, tx: StoreTx, conversation: Conversation, message: Message,
                       woken: _Wake, now: datetime,
                       participants: Sequence[Participant] | None = None) -> None:
        """The transactional outbox: a delivery to every participant the message must
        reach, in the transaction that records it. ``participants``: the conversation's,
        those who left included (the author may be one), when the caller has them."""
        if participants is None:
            participants = await tx.list_participants(conversation.id, include_left=True)
        author = next((p for p in participants if p.id == message.author), None)
        for target in delivery_targets(message, participants):  # current ones only
            await self._add_delivery(tx, conversation, message, target, author, woken, now)
        await tx.add_event("message.added", conversation_id=message.conversation_id,
                           data={"message_id": message.id, "index": message.index}, now=now)

    async def _add_delivery(self, tx: StoreTx, conversation: Conversation, message: Message,
                            target: Participant, author: Participant | None, woken: _Wake,
                            now: datetime) -> None:
        """Claimed at birth when this process's worker for the channel has room (it
        takes the job once the transaction commits); left pending for a claim otherwise."""
        taker = self._takers(target.channel)
        lease = taker.lease_for(target, now) if taker is not None else None
        delivery = await tx.add_delivery(message.id, target.id, target.channel, now=now,
                                         lease_until=lease)
        if taker is None or lease is None:
            woken.channels.add(target.channel)
            return
        woken.taken.append((taker, DeliveryJob(
            delivery=delivery, message=message, target=target, conversation=conversation,
            author=author), lease))

    def _settle(self, woken: _Wake) -> None:
        """After the commit: hands the claimed deliveries to their workers, wakes the
        others (the wake also tells event streams that events were written)."""
        for taker, job, lease in woken.taken:
            taker.take(job, lease)
        self._wake(woken.channels)

    # ---- rendering ----------------------------------------------------------------------

    def text_for_phone(self, job: DeliveryJob) -> str:
        """The body a phone receives: system notices as they are, others behind the
        rule's sender label; media the phone side cannot carry as links."""
        body = job.message.body or ""
        if job.message.source is MessageSource.SYSTEM:
            return body
        rule = self._rules.get(job.conversation.rule) if job.conversation.rule else None
        if rule is None or not rule.sender_label or job.author is None:
            return body
        if job.author.identity is None:
            return body
        return self._rules.sender_label(rule, job.author.identity) + body

    def text_for_wallets(self, job: DeliveryJob) -> str:
        """The text posted into the group: a phone's body with its media as links."""
        parts = [job.message.body] if job.message.body else []
        parts += [f"[{m.content_type or 'media'}] {m.url}" for m in job.message.media]
        return "\n".join(parts)


async def load_job(tx: StoreTx, delivery: Delivery) -> DeliveryJob:
    """The delivery with its message, target, author and conversation."""
    message = await tx.get_message(delivery.message_id)
    target = await tx.get_participant(delivery.participant_id)
    assert message is not None and target is not None, delivery.id
    author = await tx.get_participant(message.author) if message.author else None
    return DeliveryJob(delivery=delivery, message=message, target=target,
                       conversation=await _conversation(tx, message.conversation_id),
                       author=author)


def delivery_event(delivery: Delivery) -> dict[str, Any]:
    return {"delivery_id": delivery.id, "message_id": delivery.message_id,
            "participant_id": delivery.participant_id, "state": delivery.state.value,
            "error_code": delivery.error_code}


async def _conversation(tx: StoreTx, conversation_id: ConversationId) -> Conversation:
    conversation = await tx.get_conversation(conversation_id)
    assert conversation is not None, conversation_id
    return conversation


def group_name(channel: Channel, phone: PhoneNumber) -> str:
    label = "WhatsApp" if channel is Channel.WHATSAPP else "SMS"
    return f"{label} · {_pretty(phone)}"


def _pretty(phone: str | None) -> str:
    """"+15550100123" -> "+1 555-010-0123": readable, for the wallet side (the wallet's
    owner is a party to the conversation; logs use ``mask`` instead)."""
    if not phone:
        return ""
    try:
        return str(phonenumbers.format_number(
            phonenumbers.parse(phone, None), phonenumbers.PhoneNumberFormat.INTERNATIONAL))
    except phonenumbers.NumberParseException:
        return phone
