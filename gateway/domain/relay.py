"""The relay: the one place where messages and deliveries are written.

Every entry point does its work in one store transaction (verify → **record** →
acknowledge → deliver): the message, the routing decision, the deliveries and the events
announcing them commit together or not at all, and a repeated message (same source and
external id) is recognised and answered as already done. Inbound texts, wallet posts, API
sends, departures and the gateway's own notices come in here; so do the outbox engine's
claims and results, and providers' status callbacks: every delivery state changes here
(through ``Writer``). Sending happens in the outbox engine (``gateway.delivery``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from gateway.domain.clock import Clock
from gateway.domain.ids import ConversationId, ParticipantId, WalletAddress
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
)
from gateway.domain.outcomes import Failed, HandBack, Outcome, Retry, Sent, Unknown
from gateway.domain.phones import mask
from gateway.domain.ports import ChatMessage, DeliveryTaker, NewMessage, Store, StoreTx
from gateway.domain.rendering import pretty, reaction_text, reply_text
from gateway.domain.routing import Outcome as Routed
from gateway.domain.routing import PhoneText, Routing
from gateway.domain.rules import RuleBook, short_address
from gateway.domain.writer import AfterCommit, Writer
from gateway.errors import (
    ActivePairConflict,
    Conflict,
    DuplicateMessage,
    LeaseLost,
    NotFound,
)

log = logging.getLogger(__name__)

NOT_TEXT_NOTICE = ("This message was not delivered: only text and files can be sent to "
                   "{phone}; {kind} messages cannot be carried by SMS.")
REFUSED_NOTICE = "This file was not delivered to {phone}: {reason}."
CLOSED_NOTICE = "This conversation is closed; the phone can no longer receive messages here."
LEFT_NOTICE = "{wallet} has left this conversation; your texts no longer reach them."
NOT_IN_GROUP = "the wallet is not in the conversation's group"
LEAVE_REQUEST = "leave_request"  # the content type a wallet sends when it leaves a group
REACTION = "reaction"
REPLY = "reply"

Wake = Callable[[AfterCommit], None]
Prepare = Callable[[StoreTx], Awaitable[tuple[Conversation, ParticipantId | None]]]

__all__ = ["CLOSED_NOTICE", "LEAVE_REQUEST", "NOT_IN_GROUP", "PhoneText", "Relay", "Routed"]


class Relay:
    def __init__(self, store: Store, rules: RuleBook, clock: Clock, *,
                 wake: Wake = lambda _after: None,
                 takers: Callable[[Channel], DeliveryTaker | None] = lambda _channel: None,
                 ) -> None:
        self._store = store
        self._rules = rules
        self._clock = clock
        self._wake = wake
        self._writer = Writer(takers=takers)
        self._routing = Routing(rules, self._writer)

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[tuple[StoreTx, AfterCommit]]:
        """One transaction: its events are written last, and once it has committed the
        deliveries it claimed at birth go to their engines and the others are woken."""
        after = AfterCommit()
        try:
            async with self._store.transaction() as tx:
                yield tx, after
                await after.write_events(tx)
        except BaseException:
            after.hand_over(committed=False)
            raise
        after.hand_over(committed=True)
        self._wake(after)

    # ---- phone → gateway ----------------------------------------------------------------

    async def receive_phone_text(self, text: PhoneText) -> Routed:
        """Records an inbound SMS/WhatsApp message and what it causes. Safe to call again
        with the same text (Twilio retries): the second call changes nothing."""
        for attempt in range(3):
            try:
                async with self._writing() as (tx, after):
                    return await self._routing.phone_text(tx, after, text, self._clock.now())
            except DuplicateMessage:
                return Routed.DUPLICATE
            except ActivePairConflict:
                # Two first texts from the same phone raced to open a conversation; the
                # other one won, so this one now finds it.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    # ---- wallet → gateway ---------------------------------------------------------------

    async def receive_chat_message(self, chat: ChatMessage) -> Routed:
        """Records a message a wallet sent into one of the gateway's groups."""
        try:
            async with self._writing() as (tx, after):
                if chat.content_type == LEAVE_REQUEST:
                    return await self._wallet_left(tx, after, chat)
                return await self._chat_message(tx, after, chat)
        except DuplicateMessage:
            return Routed.DUPLICATE

    async def _chat_message(self, tx: StoreTx, after: AfterCommit,
                            chat: ChatMessage) -> Routed:
        conversation = await tx.get_conversation_by_group(chat.group_id)
        if conversation is None:
            return Routed.IGNORED
        await tx.set_cursor(chat.group_id, chat.sent_at_ns)
        if await tx.find_message(MessageSource.XMTP, chat.message_id) is not None:
            return Routed.DUPLICATE
        now = self._clock.now()
        participants = await tx.list_participants(conversation.id, include_left=True)
        author = next((p for p in participants if p.identity == chat.sender), None)
        attributes: dict[str, Any] = {"wallet": chat.sender}
        if chat.content_type != "text":
            attributes["content_type"] = chat.content_type
        if chat.reference is not None:
            attributes["in_reply_to"] = chat.reference.message_id
        body = _readable(chat)
        new = NewMessage(conversation_id=conversation.id, author=author.id if author else None,
                         body=body, source=MessageSource.XMTP, external_id=chat.message_id,
                         media=chat.media, attributes=attributes)
        phones = [p for p in participants if p.active and not p.is_chat]
        phone_names = ", ".join(pretty(p.address) for p in phones if p.address) or "the phone"
        if conversation.state is not ConversationState.ACTIVE:
            await self._writer.keep(tx, after, conversation, new, now=now)
            await self._writer.notice_to_wallets(tx, after, conversation, CLOSED_NOTICE,
                                                 now=now)
        elif chat.removed:
            await self._writer.keep(tx, after, conversation, new, now=now)  # nothing to say
        elif chat.refused is not None:
            await self._writer.keep(tx, after, conversation, new, now=now)
            await self._writer.notice_to_wallets(tx, after, conversation, REFUSED_NOTICE.format(
                phone=phone_names, reason=chat.refused), now=now)
        elif body is None and not chat.media:
            await self._writer.keep(tx, after, conversation, new, now=now)
            await self._writer.notice_to_wallets(tx, after, conversation, NOT_TEXT_NOTICE.format(
                phone=phone_names, kind=chat.content_type), now=now)
        else:
            await self._writer.record(tx, after, conversation, new, now=now,
                                      participants=participants)
        return Routed.RECORDED

    async def _wallet_left(self, tx: StoreTx, after: AfterCommit, chat: ChatMessage) -> Routed:
        """A wallet that blocks a conversation leaves its group (XMTP consent is private
        to the wallet's inbox; the leave request its app sends is what the gateway sees).
        Its participant gets consent ``denied`` — nothing more is posted for it — and the
        phone is told, once: a repeated leave request (a catch-up after a restart) finds
        the consent already denied."""
        conversation = await tx.get_conversation_by_group(chat.group_id)
        if conversation is None:
            return Routed.IGNORED
        await tx.set_cursor(chat.group_id, chat.sent_at_ns)
        participants = await tx.list_participants(conversation.id)
        wallet = next((p for p in participants if p.identity == chat.sender), None)
        if wallet is None or wallet.consent is Consent.DENIED:
            return Routed.DUPLICATE
        now = self._clock.now()
        await self._writer.set_consent(tx, after, wallet, Consent.DENIED, now=now)
        await self._writer.notice_to_phones(
            tx, after, conversation, LEFT_NOTICE.format(wallet=short_address(chat.sender)),
            now=now, phones=[p for p in participants if p.consent is not Consent.DENIED])
        log.info("wallet %s left conversation %s", short_address(chat.sender),
                 conversation.id)
        return Routed.LEFT

    # ---- the API ------------------------------------------------------------------------

    async def post(self, prepare: Prepare, *, body: str | None, media: Sequence[Media],
                   attributes: dict[str, Any]) -> Message:
        """A message sent through the API, to every other participant on their own
        channel. ``prepare`` finds the conversation and the author inside the transaction
        (and refuses, raising, what may not be sent)."""
        async with self._writing() as (tx, after):
            conversation, author = await prepare(tx)
            return await self._writer.record(tx, after, conversation, NewMessage(
                conversation_id=conversation.id, author=author, body=body,
                source=MessageSource.API, media=tuple(media), attributes=attributes),
                now=self._clock.now())

    # ---- the chat side's news -------------------------------------------------------------

    async def group_made(self, conversation_id: ConversationId, group_id: str,
                         left_out: Sequence[WalletAddress]) -> str:
        """The conversation's XMTP group was made (by the chat channel, at its first
        post), without ``left_out``, wallets that are not on XMTP: they leave the
        conversation, and the phone and the group are told. When another process (or the
        API) stored a group meanwhile, that one is the conversation's: returned, and the
        one made here stays empty."""
        async with self._writing() as (tx, after):
            conversation = await _conversation(tx, conversation_id)
            if conversation.xmtp_group_id is not None:
                log.info("conversation %s got its group elsewhere; using it", conversation_id)
                return conversation.xmtp_group_id
            now = self._clock.now()
            try:
                conversation = await self._writer.set_group(tx, after, conversation, group_id,
                                                            now=now)
            except Conflict:
                raise  # the group is another conversation's: never reused
            if left_out:
                await self._left_out(tx, after, conversation, left_out, now)
            return group_id

    async def _left_out(self, tx: StoreTx, after: AfterCommit, conversation: Conversation,
                        wallets: Sequence[WalletAddress], now: datetime) -> None:
        participants = await tx.list_participants(conversation.id)
        for p in participants:
            if p.identity in wallets:
                await self._writer.remove_participant(tx, after, p, now=now)
        names = ", ".join(short_address(w) for w in wallets)
        one = len(wallets) == 1
        await self._writer.notice_to_phones(
            tx, after, conversation,
            f"Sorry, {names} cannot receive messages: not on XMTP. The others in this "
            "conversation get your texts.", now=now, phones=participants)
        await self._writer.notice_to_wallets(
            tx, after, conversation, f"{names} {'is' if one else 'are'} not on XMTP and "
            f"{'was' if one else 'were'} left out of this conversation.", now=now)

    # ---- the outbox engine ----------------------------------------------------------------

    async def claim(self, channels: Sequence[Channel], *, holder: str, lease_until: datetime,
                    limit: int) -> tuple[list[DeliveryJob], datetime | None]:
        """Due deliveries claimed for ``holder`` (announced), and when the next one falls
        due."""
        async with self._writing() as (tx, after):
            now = self._clock.now()
            jobs = await tx.claim_deliveries(channels, holder=holder, now=now,
                                             lease_until=lease_until, limit=limit)
            await self._claimed(tx, after, jobs, now)
            return jobs, await tx.next_due(channels, now=now)

    async def reclaim(self, channels: Sequence[Channel], *, holder: str,
                      lease_until: datetime, limit: int) -> list[DeliveryJob]:
        """Deliveries whose outcome nobody will report, claimed for reconciling."""
        async with self._writing() as (tx, after):
            now = self._clock.now()
            jobs = await tx.claim_reconcilable(channels, holder=holder, now=now,
                                               lease_until=lease_until, limit=limit)
            await self._claimed(tx, after, jobs, now)
            return jobs

    async def _claimed(self, tx: StoreTx, after: AfterCommit, jobs: Sequence[DeliveryJob],
                       now: datetime) -> None:
        for job in jobs:
            await self._writer.moved(tx, after, job.conversation.id, [job.delivery], now)

    async def release_held(self, holder: str) -> int:
        """This process starts again as ``holder``: what its previous life held goes to
        the reconciler at once."""
        async with self._writing() as (tx, after):
            now = self._clock.now()
            released = await tx.release_held(holder, now=now)
            for delivery in released:
                message = await tx.get_message(delivery.message_id)
                assert message is not None
                await self._writer.moved(tx, after, message.conversation_id, [delivery], now)
            return len(released)

    async def renew(self, job: DeliveryJob, until: datetime) -> DeliveryJob | None:
        """``job`` with its lease extended to ``until``, if it is still ``job``'s (no
        visible change: nothing to announce); None when another claim took it."""
        assert job.lease is not None
        async with self._store.transaction() as tx:
            lease = await tx.renew_lease(job.delivery.id, job.lease, until=until)
        if lease is None:
            return None
        return replace(job, delivery=replace(job.delivery, lease=lease))

    async def settle(self, results: Sequence[tuple[DeliveryJob, Outcome]]) -> list[bool]:
        """Writes what became of claimed deliveries, in one transaction (group commit),
        each under the lease it was claimed with. A result whose lease another claim took
        meanwhile is dropped (False): the row's new owner settles it."""
        kept = []
        async with self._writing() as (tx, after):
            now = self._clock.now()
            for job, outcome in results:
                try:
                    await self._settle(tx, after, job, outcome, now)
                    kept.append(True)
                except LeaseLost:
                    log.warning("delivery %s: result came after its lease was taken; "
                                "dropped, the delivery's new owner settles it",
                                job.delivery.id)
                    kept.append(False)
                except NotFound:
                    log.info("delivery %s is gone (its conversation was deleted); its "
                             "result is dropped", job.delivery.id)
                    kept.append(False)
        return kept

    async def _settle(self, tx: StoreTx, after: AfterCommit, job: DeliveryJob,
                      outcome: Outcome, now: datetime) -> None:
        lease = job.lease
        siblings = await self._siblings(tx, job, outcome)
        changed: list[Delivery] = []

        async def each(write: Callable[[Delivery, bool], Awaitable[Delivery]]) -> None:
            changed.append(await write(job.delivery, True))
            for sibling in siblings:
                changed.append(await write(sibling, False))

        if isinstance(outcome, Sent):
            left = ({p.id for p in await tx.list_participants(job.conversation.id,
                                                              include_left=True)
                     if not p.active} if siblings or job.target.is_chat else set())

            async def sent(d: Delivery, own: bool) -> Delivery:
                if job.target.is_chat and d.participant_id in left:
                    # not in the group the message was posted to
                    return await tx.mark_failed(d.id, error_code=None, error_message=NOT_IN_GROUP,
                                                now=now, lease=lease if own else None)
                return await tx.mark_sent(d.id, provider_id=outcome.provider_id, now=now,
                                          lease=lease if own else None)
            await each(sent)
        elif isinstance(outcome, Retry):
            due = outcome.due or now
            await each(lambda d, own: tx.mark_retry(
                d.id, next_attempt_at=due, error_code=outcome.code,
                error_message=outcome.reason, now=now, lease=lease if own else None))
        elif isinstance(outcome, Failed):
            await each(lambda d, own: tx.mark_failed(
                d.id, error_code=outcome.code, error_message=outcome.reason, now=now,
                lease=lease if own else None))
        elif isinstance(outcome, Unknown):
            await each(lambda d, own: tx.mark_unknown(d.id, now=now,
                                                      lease=lease if own else None))
        elif isinstance(outcome, HandBack):
            assert lease is not None, "only a claimed delivery is handed back"
            await each(lambda d, own: tx.hand_back(d.id, due=outcome.due, now=now,
                                                   lease=lease if own else None))
        await self._writer.moved(tx, after, job.conversation.id, changed, now)
        mine = changed[0]
        if mine.state.is_failure:
            await self._report_failure(tx, after, job, mine, outcome, now)
        elif isinstance(outcome, Sent) and outcome.note:
            await self._tell_author_side(tx, after, job, outcome.note, now)

    async def _tell_author_side(self, tx: StoreTx, after: AfterCommit, job: DeliveryJob,
                                note: str, now: datetime) -> None:
        """One line about a delivery that went, to the side its message came from."""
        if job.message.source is MessageSource.SYSTEM:
            return
        conversation = await _conversation(tx, job.conversation.id)
        if job.target.is_chat:
            await self._writer.notice_to_phones(tx, after, conversation, note, now=now)
        else:
            await self._writer.notice_to_wallets(tx, after, conversation, note, now=now)

    async def _siblings(self, tx: StoreTx, job: DeliveryJob,
                        outcome: Outcome) -> list[Delivery]:
        """The other deliveries that move with the claimed one: on XMTP, the message's
        other wallets (one post into the group is every wallet's); and when the whole
        lane fails the same way (a group that cannot be made), every delivery waiting in
        it that nobody else holds."""
        if not job.target.is_chat:
            return []
        if isinstance(outcome, Failed) and outcome.whole_lane:
            holder = job.lease.holder if job.lease else None
            return [d for d in await tx.open_in_lane(job.lane)
                    if d.id != job.delivery.id
                    and (d.lease is None or d.lease.holder == holder)]
        return [d for d in await tx.list_deliveries(job.message.id)
                if d.channel is Channel.XMTP and d.id != job.delivery.id
                and d.state in (DeliveryState.PENDING, DeliveryState.SENDING,
                                DeliveryState.UNKNOWN)]

    async def _report_failure(self, tx: StoreTx, after: AfterCommit, job: DeliveryJob,
                              delivery: Delivery, outcome: Outcome, now: datetime) -> None:
        """A delivery that failed for good: its author's side is told. Notices about
        notices are not sent."""
        if job.message.source is MessageSource.SYSTEM:
            return
        conversation = await _conversation(tx, job.conversation.id)
        if job.target.is_chat:
            if isinstance(outcome, Failed) and outcome.unreachable is not None:
                await self._writer.notice_to_phones(
                    tx, after, conversation,
                    f"Sorry, {short_address(outcome.unreachable)} cannot receive messages: "
                    "that wallet is not on XMTP.", now=now)
            elif isinstance(outcome, Failed):
                # nothing of the message could be posted (its files were refused, or
                # could not be fetched or stored however often it was tried)
                await self._writer.notice_to_phones(
                    tx, after, conversation, f"Not delivered: {outcome.reason}.", now=now)
            return
        phone = pretty(job.target.address) if job.target.address else "the phone"
        code = delivery.error_code
        detail = f" (error {code})" if code is not None else ""
        reason = delivery.error_message or f"message {delivery.state.value}"
        log.warning("delivery %s to %s %s: %s (code %s)", delivery.id,
                    mask(job.target.address or ""), delivery.state.value, reason, code)
        await self._writer.notice_to_wallets(
            tx, after, conversation, f"Not delivered to {phone}: {reason}{detail}.", now=now)

    # ---- the phone side's news -------------------------------------------------------------

    async def phone_status(
        self, provider_id: str, state: DeliveryState, *, error_code: int | None,
        error_message: str | None,
    ) -> Delivery | None:
        """A status callback for a text we sent. A failure is reported to the author's
        side once: only by the callback that moved the delivery into it (Twilio may send
        one again). A callback that arrives before the send's own response is kept by
        the store and applied when the provider id is recorded.

        A callback that says no more than "sent" (queued, sending, sent …) is not
        written: a delivery with a provider id is at least sent already, and one without
        (the send's response not stored yet) becomes sent when it is."""
        if state.rank <= DeliveryState.SENT.rank:
            return None
        async with self._writing() as (tx, after):
            now = self._clock.now()
            change = await tx.record_status(
                provider_id, state, error_code=error_code, error_message=error_message,
                now=now)
            if change is None or not change.moved:  # kept for later, or nothing new
                return change.delivery if change else None
            delivery = change.delivery
            job = await load_job(tx, delivery)
            await self._writer.moved(tx, after, job.conversation.id, [delivery], now)
            if state.is_failure and delivery.state is state:
                await self._report_failure(tx, after, job, delivery, Failed(
                    error_message or f"message {state}", error_code), now)
            return delivery


def _readable(chat: ChatMessage) -> str | None:
    """What a phone reads of a wallet's message: its text, a reaction as '👍 to "…"', a
    reply quoting the start of its original; None when it has no text (a file)."""
    if chat.text is None:
        return None
    quoted = chat.reference.quoted if chat.reference is not None else None
    if chat.content_type == REACTION:
        return reaction_text(chat.text, quoted)
    if chat.content_type == REPLY:
        return reply_text(chat.text, quoted)
    return chat.text


async def load_job(tx: StoreTx, delivery: Delivery) -> DeliveryJob:
    """The delivery with its message, target, author and conversation."""
    message = await tx.get_message(delivery.message_id)
    target = await tx.get_participant(delivery.participant_id)
    assert message is not None and target is not None, delivery.id
    author = await tx.get_participant(message.author) if message.author else None
    return DeliveryJob(delivery=delivery, message=message, target=target,
                       conversation=await _conversation(tx, message.conversation_id),
                       author=author)


async def _conversation(tx: StoreTx, conversation_id: ConversationId) -> Conversation:
    conversation = await tx.get_conversation(conversation_id)
    assert conversation is not None, conversation_id
    return conversation
