"""A gateway's delivery half, in this process: a real store (SQLite or PostgreSQL), the
relay, one outbox engine per channel, and recording networks. Texts come in through the
relay's own entry points, as webhooks and the chat stream bring them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from gateway.delivery import (
    Backoff,
    ChatChannel,
    EngineSettings,
    Holder,
    Outbox,
    Pacer,
    PacingSettings,
    PhoneChannel,
    PhoneSettings,
)
from gateway.delivery.holder import new_holder_id
from gateway.domain.clock import Clock, SystemClock
from gateway.domain.ids import ConversationId, ParticipantId, PhoneNumber, WalletAddress
from gateway.domain.models import (
    Channel,
    Conversation,
    Delivery,
    DeliveryJob,
    DeliveryState,
    Media,
    Message,
)
from gateway.domain.outcomes import Outcome
from gateway.domain.policy import OutboundPolicy
from gateway.domain.ports import ChatMessage, DeliveryTaker, NewParticipant, StoreTx
from gateway.domain.relay import PhoneText, Relay
from gateway.domain.rules import Rule, RuleBook, RuleMode
from gateway.domain.writer import AfterCommit
from gateway.media.carrier import MediaCarrier
from gateway.store import SqlStore, open_store
from gateway.testing.chat_fake import RecordingChatNetwork
from gateway.testing.phone_fake import RecordingPhoneNetwork

PHONE = PhoneNumber("+14155550123")
OTHER_PHONE = PhoneNumber("+14155550124")
OUR_NUMBER = PhoneNumber("+12025550123")
OTHER_NUMBER = PhoneNumber("+12025550199")  # a number no rule serves
WALLET = WalletAddress("0xAb5801a7D398351b8bE11C439e05C5B3259aeC9B")
OTHER_WALLET = WalletAddress("0x0000000000000000000000000000000000000001")
KEYS = {"k1": secrets.token_bytes(32)}
POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL")

FAST = EngineSettings(lease=30.0, send_timeout=2.0, lease_margin=1.0, poll_interval=0.5,
                      reconcile_interval=0.2, backoff=Backoff(base=0.05, cap=0.1,
                                                              max_attempts=4),
                      pacing=PacingSettings(default=1000.0))


def rulebook(policy: OutboundPolicy | None = None, *, label: str = "") -> RuleBook:
    return RuleBook([Rule(name="support", proxy=OUR_NUMBER,
                          channels=frozenset({Channel.SMS, Channel.WHATSAPP}),
                          mode=RuleMode.FIXED, wallets=(WALLET,), sender_label=label,
                          outbound=policy or OutboundPolicy())], {})


async def fresh_postgres(suffix: str) -> str:
    """A database of this suite's own, emptied: other suites share the server."""
    assert POSTGRES_URL is not None
    url = make_url(POSTGRES_URL)
    name = f"{url.database}_{suffix}"
    dsn = url.set(drivername="postgresql")
    server = await asyncpg.connect(dsn.render_as_string(hide_password=False))
    try:
        if not await server.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await server.execute(f'CREATE DATABASE "{name}"')
    finally:
        await server.close()
    db = await asyncpg.connect(dsn.set(database=name).render_as_string(hide_password=False))
    try:
        await db.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
    finally:
        await db.close()
    return url.set(database=name).render_as_string(hide_password=False)


async def store_url_for(backend: str, tmp_path: Path) -> str:
    if backend == "postgres":
        return await fresh_postgres("delivery")
    return f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}"


@dataclass
class Process:
    """One gateway process's delivery half: its holder and its two engines."""

    holder: Holder
    phone: Outbox
    chat: Outbox
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def engine(self, channel: Channel) -> Outbox:
        return self.chat if channel is Channel.XMTP else self.phone


class World:
    def __init__(self, store: SqlStore, *, clock: Clock | None = None,
                 rules: RuleBook | None = None, settings: EngineSettings = FAST,
                 chat_settings: EngineSettings | None = None,
                 media: MediaCarrier | None = None) -> None:
        """``media``: the channels carry files with it (without: links and names)."""
        self.store = store
        self.media = media
        self.clock = clock or SystemClock()
        self.rules = rules or rulebook()
        self.settings = settings
        self.chat_settings = chat_settings or settings
        self.phone = RecordingPhoneNetwork(self.clock)
        self.chat = RecordingChatNetwork(reachable={WALLET, OTHER_WALLET})
        self.process: Process | None = None
        self.relay = Relay(store, self.rules, self.clock, wake=self._woken,
                           takers=self._taker)
        # When set, results wait here before they are written (a test stops a process
        # between a send and the write of its result).
        self.settle_gate: asyncio.Event | None = None
        self.alive_seconds = 30.0  # a holder's heartbeat (tests of takeover shorten it)
        self.reconcile_settle = 0.0  # the phone channel's wait before a lookup
        self.chat_options: dict[str, Any] = {}  # more of ChatChannel's options
        self.chat_pacer: Pacer | None = None  # the chat engine's budgets, when shared
        self.ledger: GatedLedger | None = None  # the last process's engines' relay
        self._sids = itertools.count(1)

    # ---- processes ---------------------------------------------------------------------

    def new_process(self, holder_id: str | None = None) -> Process:
        holder = Holder(self.store, self.clock, holder_id=holder_id or new_holder_id(),
                        alive_seconds=self.alive_seconds,
                        beat_seconds=self.alive_seconds / 3)
        ledger = self.ledger = GatedLedger(self)
        phone = Outbox(ledger, PhoneChannel(
            self.store, self.phone, self.rules, self.clock,
            PhoneSettings(status_callback_url="https://gw.example/twilio/status",
                          reconcile_settle=self.reconcile_settle), media=self.media),
            holder, self.clock, self.settings)
        chat = Outbox(ledger, ChatChannel(self.store, self.chat, self.rules,
                                              group_made=self.relay.group_made,
                                              send_timeout=2.0, media=self.media,
                                              clock=self.clock,
                                              give_up_after=self.chat_settings.backoff
                                              .max_attempts, **self.chat_options),
                      holder, self.clock, self.chat_settings, pacer=self.chat_pacer)
        return Process(holder, phone, chat)

    async def start(self, holder_id: str | None = None) -> Process:
        """Starts a process as ``gateway serve`` does: beat, take back what this holder
        held in a previous life, run both engines."""
        process = self.new_process(holder_id)
        await process.holder.beat()
        await self.relay.release_held(process.holder.id)
        process.tasks = [asyncio.create_task(engine.run())
                         for engine in (process.phone, process.chat)]
        process.tasks.append(asyncio.create_task(process.holder.run()))
        self.process = process
        await asyncio.sleep(0)  # the engines are running (and take deliveries at birth)
        return process

    async def stop(self) -> None:
        """A graceful stop (SIGTERM): the engines hand back what they had not started."""
        if self.process is None:
            return
        for task in self.process.tasks:
            task.cancel()
        await asyncio.gather(*self.process.tasks, return_exceptions=True)
        self.process = None

    async def kill(self) -> None:
        """SIGKILL: the process stops dead, writing nothing more (what it held in memory,
        results included, is gone)."""
        if self.process is None:
            return
        process, self.process = self.process, None
        for engine in (process.phone, process.chat):
            engine.halt()
        for task in process.tasks:
            task.cancel()
        await asyncio.gather(*process.tasks, return_exceptions=True)

    def _taker(self, channel: Channel) -> DeliveryTaker | None:
        return self.process.engine(channel) if self.process is not None else None

    def _woken(self, after: AfterCommit) -> None:
        if self.process is None:
            return
        if any(c.is_phone for c in after.channels):
            self.process.phone.wake()
        if Channel.XMTP in after.channels:
            self.process.chat.wake()

    # ---- traffic -----------------------------------------------------------------------

    async def phone_says(self, body: str, *, phone: PhoneNumber = PHONE,
                         channel: Channel = Channel.SMS, media: Sequence[Media] = ()) -> None:
        await self.relay.receive_phone_text(PhoneText(
            external_id=f"SMin{next(self._sids):030d}", from_=phone, to=OUR_NUMBER,
            channel=channel, body=body, media=tuple(media)))

    async def group_of(self, phone: PhoneNumber = PHONE,
                       channel: Channel = Channel.SMS) -> str:
        """The conversation's group, once the chat engine made it."""
        async def made() -> str | None:
            async with self.store.transaction() as tx:
                participant = await tx.find_phone_participant(phone, OUR_NUMBER, channel)
                assert participant is not None, "the phone has no conversation yet"
                conversation = await tx.get_conversation(participant.conversation_id)
            assert conversation is not None
            return conversation.xmtp_group_id
        return await until(made)

    async def wallet_says(self, body: str | None, *, phone: PhoneNumber = PHONE,
                          wallet: WalletAddress = WALLET, content_type: str = "text",
                          encoded: bytes = b"") -> None:
        """As the stream consumer hands it over: an attachment (``encoded``) described
        by the media step first."""
        group = await self.group_of(phone)
        chat = ChatMessage(
            group_id=group, message_id=f"xm{next(self._sids)}", sender=wallet,
            sent_at_ns=time.time_ns(), text=body, content_type=content_type,
            encoded=encoded)
        if self.media is not None:
            chat = await self.media.describe(chat)
        await self.relay.receive_chat_message(chat)

    async def api_conversation(self, phone: PhoneNumber = PHONE, *,
                               proxy: PhoneNumber = OUR_NUMBER,
                               channel: Channel = Channel.SMS) -> ConversationId:
        """A conversation the API made: the phone (who never texted in) and the wallet."""
        now = self.clock.now()
        async with self.store.transaction() as tx:
            conversation = await tx.create_conversation(rule=None, now=now)
            await tx.add_participant(NewParticipant(
                conversation.id, channel, address=phone, proxy_address=proxy), now=now)
            await tx.add_participant(NewParticipant(
                conversation.id, Channel.XMTP, identity=WALLET), now=now)
        return conversation.id

    async def api_send(self, conversation_id: ConversationId, body: str, *,
                       media: Sequence[Media] = ()) -> Message:
        """The wallet's message sent through the API (as SignalWire's author field)."""
        async def prepare(tx: StoreTx) -> tuple[Conversation, ParticipantId | None]:
            conversation = await tx.get_conversation(conversation_id)
            assert conversation is not None
            wallet = next(p for p in await tx.list_participants(conversation_id) if p.is_chat)
            return conversation, wallet.id
        return await self.relay.post(prepare, body=body, media=media, attributes={})

    # ---- looking ---------------------------------------------------------------------------

    async def deliveries(self, channel: Channel | None = None) -> list[Delivery]:
        async with self.store.transaction() as tx:
            conversations = await self._conversations(tx)
            found = []
            for conversation_id in conversations:
                for message in await self._messages(tx, conversation_id):
                    found += [d for d in await tx.list_deliveries(message.id)
                              if channel is None or d.channel is channel]
        return found

    async def _conversations(self, tx: object) -> list[str]:
        from gateway.store.tables import conversations
        rows = await tx.connection.execute(conversations.select())  # type: ignore[attr-defined]
        return [row.id for row in rows]

    async def _messages(self, tx: object, conversation_id: str) -> list[Message]:
        from gateway.store.tables import messages
        rows = await tx.connection.execute(  # type: ignore[attr-defined]
            messages.select().where(messages.c.conversation_id == conversation_id)
            .order_by(messages.c.index))
        found = []
        for row in rows:
            message = await tx.get_message(row.id)  # type: ignore[attr-defined]
            found.append(message)
        return found

    async def settled(self, channel: Channel | None = None, *, within: float = 10.0) -> None:
        """Until no delivery (on ``channel``) is open any more."""
        async def done() -> bool | None:
            open_ = [d for d in await self.deliveries(channel)
                     if d.state in (DeliveryState.PENDING, DeliveryState.SENDING,
                                    DeliveryState.UNKNOWN)]
            return True if not open_ else None
        await until(done, within=within)

    def texts_to_phone(self, phone: PhoneNumber = PHONE) -> list[str | None]:
        return [a.text.body for a in self.phone.accepted if a.text.to == phone]

    def posts(self) -> list[str]:
        return [s.text for s in self.chat.sent]


class GatedLedger:
    """The relay as the engines see it, with the world's settle gate in front of its
    result writes."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.reclaim = world.relay.reclaim
        self.renew = world.relay.renew
        self.claims = 0  # how many claims have begun

    async def claim(self, channels: Sequence[Channel], *, holder: str, lease_until: datetime,
                    limit: int) -> tuple[list[DeliveryJob], datetime | None]:
        self.claims += 1
        return await self._world.relay.claim(channels, holder=holder,
                                             lease_until=lease_until, limit=limit)

    async def settle(self, results: Sequence[tuple[DeliveryJob, Outcome]]) -> list[bool]:
        gate = self._world.settle_gate
        if gate is not None:
            await gate.wait()
        return await self._world.relay.settle(results)


async def until(found: Callable[[], Awaitable[object | None]], *, within: float = 10.0,
                step: float = 0.01) -> object:
    """Polls ``found`` until it answers something other than None (bounded)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await found()
        if value is not None:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("not within the time allowed")
        await asyncio.sleep(step)


@contextlib.asynccontextmanager
async def world(backend: str, tmp_path: Path, **options: object) -> AsyncIterator[World]:
    store = await open_store(await store_url_for(backend, tmp_path), keys=KEYS,
                             active_key="k1")
    w = World(store, **options)  # type: ignore[arg-type]
    try:
        yield w
    finally:
        await w.stop()
        await store.close()


def with_replaced(job: DeliveryJob, **changes: object) -> DeliveryJob:
    return replace(job, **changes)  # type: ignore[arg-type]


__all__: Sequence[str] = ()
