"""Where a phone's text goes: compliance keywords first, then the rule of the number it
texted (support line or dial mode), the conversation it belongs to, and what is recorded
and sent because of it. Runs inside the relay's transaction; writes through ``Writer``."""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.domain.ids import ConversationId, PhoneNumber, WalletAddress
from gateway.domain.keywords import Keyword, classify
from gateway.domain.models import (
    Channel,
    Consent,
    Conversation,
    ConversationState,
    Media,
    MessageSource,
    Participant,
)
from gateway.domain.phones import mask
from gateway.domain.ports import NewMessage, NewParticipant, StoreTx
from gateway.domain.rendering import group_name, pretty
from gateway.domain.rules import Rule, RuleBook, RuleMode
from gateway.domain.writer import AfterCommit, Writer

log = logging.getLogger(__name__)

DIAL_PROMPT = "Text a wallet address (0x…) or a name, then your message, to start a chat."
DEFAULT_HELP = "Reply STOP to stop receiving texts, START to receive them again."


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
    LEFT = "left"  # a wallet left a conversation's group


# What STOP-family and START keywords do: the consent they set, and what the wallets see.
_CONSENT_KEYWORDS = {
    Keyword.STOP: (Consent.DENIED, Outcome.OPTED_OUT,
                   "{phone} replied {word}: no more texts will reach them until they reply "
                   "START."),
    Keyword.START: (Consent.ALLOWED, Outcome.OPTED_IN,
                    "{phone} replied {word}: texts reach them again."),
}


class Routing:
    def __init__(self, rules: RuleBook, writer: Writer) -> None:
        self._rules = rules
        self._writer = writer

    async def phone_text(self, tx: StoreTx, after: AfterCommit, text: PhoneText,
                         now: datetime) -> Outcome:
        source = MessageSource(text.channel.value)
        if await tx.find_message(source, text.external_id) is not None:
            return Outcome.DUPLICATE
        keyword = classify(text.body)
        rule = self._rules.match(text.to, text.channel)
        # STOP and START are honoured before anything else: whatever the rules say of
        # this phone, a carrier keyword changes what may be sent to it.
        if keyword in _CONSENT_KEYWORDS:
            return await self._consent(tx, after, text, keyword, now)
        if rule is None:
            return await self._unrouted(tx, after, text, now)
        refusal = self._rules.screen(rule, text.from_)
        if refusal is not None:
            log.info("inbound text from %s refused by rule %s: %s",
                     mask(text.from_), rule.name, refusal)
            return Outcome.REFUSED

        await tx.record_inbound(text.from_, text.to, text.channel, now=now)
        existing = await tx.find_phone_participant(text.from_, text.to, text.channel)

        if keyword is Keyword.HELP:
            if existing is None:
                conversation, existing = await self._open(
                    tx, after, rule, text, [], now, state=ConversationState.INACTIVE)
            else:
                conversation = await _conversation(tx, existing)
            # Kept (not relayed), so a webhook Twilio retries is a duplicate, not a
            # second help text.
            await self._writer.keep(tx, after, conversation, _message(text, existing, source),
                                    now=now)
            await self._writer.notice_to_phones(tx, after, conversation,
                                                rule.help_text or DEFAULT_HELP, now=now,
                                                phones=[existing])
            return Outcome.HELP

        body = text.body
        if rule.mode is RuleMode.DIAL:
            dial = self._rules.parse_dial(text.body)
            if dial is not None:
                body = dial.rest
                if existing is not None:
                    conversation = await _conversation(tx, existing)
                    wallets = {p.identity for p in await tx.list_participants(conversation.id)
                               if p.identity is not None}
                    if wallets != {dial.wallet}:
                        await self._writer.set_state(tx, after, conversation,
                                                     ConversationState.CLOSED, now=now)
                        existing = None
                if existing is None:
                    # No greeting: a dial rule's is what a phone that named nobody is told.
                    conversation, existing = await self._open(
                        tx, after, rule, text, [dial.wallet], now)
                if not body and not text.media:
                    return Outcome.RECORDED
            elif existing is None:
                conversation, phone = await self._open(
                    tx, after, rule, text, [], now, state=ConversationState.INACTIVE)
                await self._writer.record(tx, after, conversation,
                                          _message(text, phone, source), now=now)
                await self._writer.notice_to_phones(tx, after, conversation,
                                                    rule.greeting or DIAL_PROMPT, now=now,
                                                    phones=[phone])
                return Outcome.PROMPTED
        elif existing is None:
            conversation, existing = await self._open(tx, after, rule, text,
                                                      list(rule.wallets), now)
            if rule.greeting:
                await self._writer.notice_to_phones(tx, after, conversation, rule.greeting,
                                                    now=now, phones=[existing])

        assert existing is not None
        conversation = await _conversation(tx, existing)
        await self._writer.record(tx, after, conversation,
                                  _message(text, existing, source, body=body), now=now)
        return Outcome.RECORDED

    async def _consent(self, tx: StoreTx, after: AfterCommit, text: PhoneText,
                       keyword: Keyword, now: datetime) -> Outcome:
        await tx.record_inbound(text.from_, text.to, text.channel, now=now)
        consent, outcome, notice = _CONSENT_KEYWORDS[keyword]
        await tx.set_contact_consent(text.from_, text.to, consent, text.channel, now=now)
        existing = await tx.find_phone_participant(text.from_, text.to, text.channel)
        if existing is not None:
            await self._writer.set_consent(tx, after, existing, consent, now=now)
            conversation = await _conversation(tx, existing)
            source = MessageSource(text.channel.value)
            await self._writer.record(tx, after, conversation,
                                      _message(text, existing, source), now=now)
            await self._writer.notice_to_wallets(tx, after, conversation, notice.format(
                phone=pretty(text.from_), word=text.body.strip().upper()), now=now)
        return outcome

    async def _unrouted(self, tx: StoreTx, after: AfterCommit, text: PhoneText,
                        now: datetime) -> Outcome:
        source = MessageSource(text.channel.value)
        existing = await tx.find_phone_participant(text.from_, text.to, text.channel)
        if existing is not None:
            # No rule serves this number and channel (any more), but the phone is in a
            # conversation through it (the API made it, or a rule since changed): the
            # text belongs there.
            await tx.record_inbound(text.from_, text.to, text.channel, now=now)
            conversation = await _conversation(tx, existing)
            await self._writer.record(tx, after, conversation,
                                      _message(text, existing, source), now=now)
            return Outcome.RECORDED
        log.warning("inbound text from %s to %s matches no rule; kept unrouted",
                    mask(text.from_), text.to)
        conversation, phone = await self._open(tx, after, None, text, [], now)
        await self._writer.record(tx, after, conversation, _message(text, phone, source),
                                  now=now)
        return Outcome.UNROUTED

    async def _open(
        self, tx: StoreTx, after: AfterCommit, rule: Rule | None, text: PhoneText,
        wallets: Sequence[WalletAddress], now: datetime, *,
        state: ConversationState = ConversationState.ACTIVE,
    ) -> tuple[Conversation, Participant]:
        contact = await tx.get_contact(text.from_, text.to, text.channel)
        members = [NewParticipant(
            conversation_id=_NO_CONVERSATION, channel=text.channel, address=text.from_,
            proxy_address=text.to,
            consent=contact.consent if contact is not None else Consent.ALLOWED)]
        members += [NewParticipant(conversation_id=_NO_CONVERSATION, channel=Channel.XMTP,
                                   identity=wallet, consent=Consent.ALLOWED)
                    for wallet in wallets]
        conversation, added = await self._writer.open_conversation(
            tx, after, rule=rule.name if rule else None,
            friendly_name=group_name(text.channel, text.from_, text.to), state=state,
            members=members, now=now)
        return conversation, added[0]


# filled in by Writer.open_conversation once the conversation exists
_NO_CONVERSATION = ConversationId("")


def _message(text: PhoneText, author: Participant, source: MessageSource, *,
             body: str | None = None) -> NewMessage:
    return NewMessage(conversation_id=author.conversation_id, author=author.id,
                      body=text.body if body is None else body, source=source,
                      external_id=text.external_id, media=text.media)


async def _conversation(tx: StoreTx, participant: Participant) -> Conversation:
    conversation = await tx.get_conversation(participant.conversation_id)
    assert conversation is not None, participant.conversation_id
    return conversation
