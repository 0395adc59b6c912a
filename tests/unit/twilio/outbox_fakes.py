"""Recording fakes for the phone outbox's unit tests: just the StoreTx methods the outbox
calls, and a phone network that records sends and answers from a script."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.domain.clock import ManualClock
from gateway.domain.ids import (
    ConversationId,
    DeliveryId,
    MessageId,
    ParticipantId,
    PhoneNumber,
)
from gateway.domain.models import (
    Channel,
    Consent,
    Contact,
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
from gateway.domain.ports import OutboundText, SentText
from gateway.errors import LeaseLost

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PHONE = PhoneNumber("+14155550123")
OTHER_PHONE = PhoneNumber("+14155550124")
OUR_NUMBER = PhoneNumber("+12025550123")
OTHER_NUMBER = PhoneNumber("+12025550199")

_ids = itertools.count(1)


def make_job(*, body: str = "hello", to: PhoneNumber = PHONE, from_: PhoneNumber = OUR_NUMBER,
             channel: Channel = Channel.SMS, rule: str | None = "support",
             created_at: datetime = T0, media: Sequence[Media] = ()) -> DeliveryJob:
    n = next(_ids)
    conversation = Conversation(
        id=ConversationId(f"CH{n}"), unique_name=None, friendly_name=None, attributes={},
        state=ConversationState.ACTIVE, rule=rule, xmtp_group_id=None, created_at=created_at,
        updated_at=created_at, last_message_at=created_at)
    target = Participant(
        id=ParticipantId(f"MBp{n}"), conversation_id=conversation.id, channel=channel,
        identity=None, address=to, proxy_address=from_, consent=Consent.ALLOWED,
        attributes={}, joined_at=created_at, left_at=None)
    message = Message(
        id=MessageId(f"IM{n}"), conversation_id=conversation.id, index=n, author=None,
        body=body, media=tuple(media), attributes={}, source=MessageSource.XMTP,
        external_id=f"x{n}", created_at=created_at)
    delivery = Delivery(
        id=DeliveryId(f"DY{n}"), message_id=message.id, participant_id=target.id,
        channel=channel, state=DeliveryState.PENDING, attempts=0, next_attempt_at=created_at,
        provider_id=None, error_code=None, error_message=None, created_at=created_at,
        updated_at=created_at)
    return DeliveryJob(delivery=delivery, message=message, target=target,
                       conversation=conversation, author=None)


@dataclass
class Row:
    job: DeliveryJob
    lease_until: datetime | None = None

    @property
    def delivery(self) -> Delivery:
        return self.job.delivery

    def update(self, **changes: Any) -> None:
        self.job = replace(self.job, delivery=replace(self.job.delivery, **changes))


@dataclass
class FakeStore:
    """Holds delivery rows and contacts; records every write as (method, delivery id, kwargs)."""

    clock: ManualClock
    rows: dict[str, Row] = field(default_factory=dict)
    contacts: dict[tuple[str, str, Channel], Contact] = field(default_factory=dict)
    writes: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    dropped: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # lease lost
    fail_next_write: Exception | None = None

    def add(self, job: DeliveryJob) -> DeliveryJob:
        self.rows[job.delivery.id] = Row(job)
        return job

    def texted_in(self, phone: str = PHONE, proxy: str = OUR_NUMBER, *,
                  at: datetime = T0, consent: Consent = Consent.UNKNOWN,
                  channels: Sequence[Channel] = (Channel.SMS, Channel.WHATSAPP)) -> None:
        for channel in channels:
            self.contacts[(phone, proxy, channel)] = Contact(
                address=PhoneNumber(phone), proxy_address=PhoneNumber(proxy),
                consent=consent, first_inbound_at=at, last_inbound_at=at, channel=channel)

    def state(self, job: DeliveryJob) -> Delivery:
        return self.rows[job.delivery.id].delivery

    def calls(self, method: str) -> list[tuple[str, dict[str, Any]]]:
        return [(d, kw) for m, d, kw in self.writes if m == method]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeTx]:
        yield FakeTx(self)


class FakeTx:
    def __init__(self, store: FakeStore) -> None:
        self.s = store

    def _write(self, method: str, delivery_id: str, *, lease: datetime | None = None,
               **kwargs: Any) -> Row:
        if self.s.fail_next_write is not None:
            exc, self.s.fail_next_write = self.s.fail_next_write, None
            raise exc
        row = self.s.rows[delivery_id]
        if lease is not None and row.lease_until != lease:
            self.s.dropped.append((method, delivery_id, kwargs))
            raise LeaseLost(delivery_id)
        self.s.writes.append((method, delivery_id, kwargs))
        return row

    async def claim_deliveries(self, channels: Sequence[Channel], *, now: datetime,
                               lease_until: datetime, limit: int) -> list[DeliveryJob]:
        due = sorted((r for r in self.s.rows.values()
                      if r.delivery.state is DeliveryState.PENDING
                      and r.delivery.channel in channels
                      and r.delivery.next_attempt_at is not None
                      and r.delivery.next_attempt_at <= now),
                     key=lambda r: (r.delivery.next_attempt_at, r.delivery.id))[:limit]
        for row in due:
            row.update(state=DeliveryState.SENDING, attempts=row.delivery.attempts + 1,
                       updated_at=now)
            row.lease_until = lease_until
        return [row.job for row in due]

    async def claim_reconcilable(self, channels: Sequence[Channel], *, now: datetime,
                                 lease_until: datetime, limit: int) -> list[DeliveryJob]:
        due = [r for r in self.s.rows.values()
               if r.delivery.channel in channels and ((r.delivery.state is DeliveryState.UNKNOWN
                   and (r.lease_until is None or r.lease_until <= now))
               or (r.delivery.state is DeliveryState.SENDING
                   and r.lease_until is not None and r.lease_until <= now))][:limit]
        for row in due:
            row.update(state=DeliveryState.UNKNOWN, updated_at=now)
            row.lease_until = lease_until
        return [row.job for row in due]

    async def get_contact(self, address: PhoneNumber, proxy_address: PhoneNumber,
                          channel: Channel = Channel.SMS) -> Contact | None:
        return self.s.contacts.get((address, proxy_address, channel))

    async def count_outbound(self, *, since: datetime, address: PhoneNumber | None = None,
                             rule: str | None = None) -> int:
        return sum(1 for r in self.s.rows.values()
                   if r.delivery.created_at >= since
                   and r.job.message.source is not MessageSource.SYSTEM
                   and (r.delivery.state is not DeliveryState.FAILED
                        or r.delivery.provider_id is not None)
                   and (address is None or r.job.target.address == address)
                   and (rule is None or r.job.conversation.rule == rule))

    async def provider_ids_sent_to(self, address: PhoneNumber, proxy_address: PhoneNumber, *,
                                   since: datetime, besides: DeliveryId) -> set[str]:
        return {r.delivery.provider_id for r in self.s.rows.values()
                if r.delivery.provider_id is not None and r.delivery.id != besides
                and (r.job.target.address, r.job.target.proxy_address) == (address, proxy_address)
                and r.delivery.updated_at >= since}

    async def mark_sent(self, delivery_id: DeliveryId, *, provider_id: str,
                        now: datetime, lease: datetime | None = None) -> Delivery:
        row = self._write("mark_sent", delivery_id, lease=lease, provider_id=provider_id)
        row.update(state=DeliveryState.SENT, provider_id=provider_id, updated_at=now)
        row.lease_until = None
        return row.delivery

    async def mark_retry(self, delivery_id: DeliveryId, *, next_attempt_at: datetime,
                         error_code: int | None, error_message: str | None,
                         now: datetime, lease: datetime | None = None) -> Delivery:
        row = self._write("mark_retry", delivery_id, lease=lease,
                          next_attempt_at=next_attempt_at,
                          error_code=error_code, error_message=error_message, now=now)
        row.update(state=DeliveryState.PENDING, next_attempt_at=next_attempt_at,
                   error_code=error_code, error_message=error_message, updated_at=now)
        row.lease_until = None
        return row.delivery

    async def hand_back(self, delivery_id: DeliveryId, *, due: datetime, now: datetime,
                        lease: datetime) -> Delivery:
        row = self._write("hand_back", delivery_id, lease=lease, next_attempt_at=due, now=now)
        row.update(state=DeliveryState.PENDING, next_attempt_at=due,
                   attempts=max(row.delivery.attempts - 1, 0), updated_at=now)
        row.lease_until = None
        return row.delivery

    async def mark_failed(self, delivery_id: DeliveryId, *, error_code: int | None,
                          error_message: str | None, now: datetime,
                          lease: datetime | None = None) -> Delivery:
        row = self._write("mark_failed", delivery_id, lease=lease, error_code=error_code,
                          error_message=error_message)
        row.update(state=DeliveryState.FAILED, error_code=error_code,
                   error_message=error_message, next_attempt_at=None, updated_at=now)
        row.lease_until = None
        return row.delivery

    async def mark_unknown(self, delivery_id: DeliveryId, *, now: datetime,
                           lease: datetime | None = None) -> Delivery:
        row = self._write("mark_unknown", delivery_id, lease=lease)
        row.update(state=DeliveryState.UNKNOWN, next_attempt_at=None, updated_at=now)
        row.lease_until = None
        return row.delivery


@dataclass
class Accepted:
    sid: str
    text: OutboundText
    created_at: datetime
    at: float  # loop time


class FakePhone:
    """Records every send. ``script`` holds what the next sends raise (None: accept);
    accepted texts are what ``find_sent`` searches, as the provider's list would."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.script: list[BaseException | None] = []
        self.attempts: list[OutboundText] = []
        self.accepted: list[Accepted] = []
        self.lookups: list[dict[str, Any]] = []
        self.delay = 0.0
        self.got_one = asyncio.Event()  # set at each accepted text
        self._sids = itertools.count(1)

    def accept_silently(self, text: OutboundText) -> str:
        """A message that reached the provider without the sender hearing back."""
        sid = f"SM{next(self._sids):032d}"
        loop = asyncio.get_running_loop()
        self.accepted.append(Accepted(sid, text, self.clock.now(), loop.time()))
        self.got_one.set()
        return sid

    async def send(self, text: OutboundText) -> SentText:
        self.attempts.append(text)
        if self.delay:
            await asyncio.sleep(self.delay)
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        return SentText(provider_id=self.accept_silently(text), status="queued")

    async def find_sent(self, *, to: PhoneNumber, from_: PhoneNumber, channel: Channel,
                        sent_after: datetime, body: str | None,
                        skip: Collection[str] = frozenset()) -> SentText | None:
        self.lookups.append({"to": to, "from_": from_, "channel": channel,
                             "sent_after": sent_after, "body": body, "skip": set(skip)})
        for accepted in self.accepted:
            t = accepted.text
            if (t.to, t.from_, t.channel) == (to, from_, channel) \
                    and accepted.sid not in skip \
                    and accepted.created_at >= sent_after \
                    and (body is None or t.body == body):
                return SentText(provider_id=accepted.sid, status="sent")
        return None

    @property
    def bodies(self) -> list[str | None]:
        return [a.text.body for a in self.accepted]


def later(clock: ManualClock, seconds: float) -> None:
    clock.advance(timedelta(seconds=seconds))
