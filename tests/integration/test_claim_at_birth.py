"""Deliveries claimed at birth, over a real SQLite store: the relay creates them leased to
this process's worker and hands them over once its transaction commits; the chat
worker's lanes post them without a claim, side by side across conversations."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.domain.clock import ManualClock
from gateway.domain.ids import PhoneNumber, WalletAddress
from gateway.domain.models import (
    Channel,
    DeliveryJob,
    DeliveryState,
    MessageSource,
    Participant,
)
from gateway.domain.ports import ChatMessage, Store
from gateway.domain.relay import Outcome, PhoneText, Relay
from gateway.metrics import Metrics
from gateway.store.sql import SqlStore, open_store
from gateway.store.tables import messages
from gateway.testing.chat_fake import RecordingChatNetwork
from gateway.twilio.outbox import OutboxSettings, PhoneOutbox
from gateway.workers import ChatDeliveryWorker, Waker
from tests.integration.bridge_harness import ALICE, PHONE, PHONE_2, SUPPORT, bridge_config
from tests.unit.twilio.outbox_fakes import FakePhone

WAIT = 5.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(f"sqlite+aiosqlite:///{tmp_path}/gateway.db",
                             keys={"k1": bytes(range(32))}, active_key="k1")
    yield store
    await store.close()


class RecordingTaker:
    """A worker with or without room, recording what it is handed."""

    def __init__(self, room: bool) -> None:
        self.room = room
        self.taken: list[tuple[DeliveryJob, datetime]] = []

    def lease_for(self, target: Participant, now: datetime) -> datetime | None:
        return now + timedelta(seconds=60) if self.room else None

    def take(self, job: DeliveryJob, lease_until: datetime) -> None:
        self.taken.append((job, lease_until))


def sms(sid: str, body: str, from_: str = PHONE) -> PhoneText:
    return PhoneText(external_id="SM" + sid * 32, from_=PhoneNumber(from_),
                     to=PhoneNumber(SUPPORT), channel=Channel.SMS, body=body)


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Polls a store-backed condition (nothing to wait on but the database) for WAIT."""
    try:
        async with asyncio.timeout(WAIT):
            while not await check():  # noqa: ASYNC110 - the condition lives in the database
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not within {WAIT}s: {what}") from None


async def xmtp_deliveries(store: Store, sid: str) -> list[Any]:
    async with store.transaction() as tx:
        message = await tx.find_message(MessageSource.SMS, "SM" + sid * 32)
        assert message is not None
        return [d for d in await tx.list_deliveries(message.id) if d.channel is Channel.XMTP]


class World:
    def __init__(self, store: Store, tmp_path: Path, chat: RecordingChatNetwork) -> None:
        self.store = store
        self.clock = ManualClock()
        self.chat = chat
        self.waker = Waker()
        self.rules = bridge_config(tmp_path, port=1, sim_url="http://127.0.0.1:9").rulebook()
        self.worker: ChatDeliveryWorker | None = None
        self.relay = Relay(store, self.rules, self.clock, wake=self.waker.wake,
                           takers=lambda c: self.worker if c is Channel.XMTP else None)
        self.worker = ChatDeliveryWorker(store, chat, self.relay, self.clock, Metrics(),
                                         self.waker, poll_seconds=3600)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ChatDeliveryWorker]:
        assert self.worker is not None
        task = asyncio.create_task(self.worker.run())
        await asyncio.sleep(0.05)  # its first claim (of nothing) is done
        try:
            yield self.worker
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class TestTheRelayClaimsAtBirth:
    async def test_a_worker_with_room_gets_the_delivery_leased_after_the_commit(
            self, store: Store, tmp_path: Path) -> None:
        taker = RecordingTaker(room=True)
        waker = Waker()
        relay = Relay(store, bridge_config(tmp_path, port=1, sim_url="http://x").rulebook(),
                      ManualClock(), wake=waker.wake,
                      takers=lambda c: taker if c is Channel.XMTP else None)
        assert await relay.receive_phone_text(sms("a", "hello")) is Outcome.RECORDED
        [delivery] = await xmtp_deliveries(store, "a")
        assert delivery.state is DeliveryState.SENDING and delivery.attempts == 1
        [(job, _lease)] = taker.taken
        assert job.delivery == delivery
        assert (job.message.body, job.target.identity) == ("hello", ALICE)
        assert job.author is not None and job.author.address == PHONE
        assert not waker.event(Channel.XMTP).is_set(), "nothing is left to claim"
        async with store.transaction() as tx:  # and nobody else can claim it
            assert await tx.claim_deliveries([Channel.XMTP], now=datetime.now().astimezone(),
                                              lease_until=datetime.now().astimezone(),
                                              limit=10) == []

    async def test_a_worker_without_room_leaves_it_pending_and_wakes_the_claim(
            self, store: Store, tmp_path: Path) -> None:
        taker = RecordingTaker(room=False)
        waker = Waker()
        relay = Relay(store, bridge_config(tmp_path, port=1, sim_url="http://x").rulebook(),
                      ManualClock(), wake=waker.wake, takers=lambda c: taker)
        await relay.receive_phone_text(sms("b", "hello"))
        [delivery] = await xmtp_deliveries(store, "b")
        assert (delivery.state, delivery.attempts) == (DeliveryState.PENDING, 0)
        assert taker.taken == []
        assert waker.event(Channel.XMTP).is_set()

    async def test_nothing_is_handed_over_when_the_transaction_rolls_back(
            self, store: Store, tmp_path: Path) -> None:
        taker = RecordingTaker(room=True)
        real = store.transaction

        @contextlib.asynccontextmanager
        async def failing_at_the_end() -> AsyncIterator[Any]:
            async with real() as tx:
                yield tx
                raise RuntimeError("the commit fails")

        store.transaction = failing_at_the_end  # type: ignore[method-assign]
        relay = Relay(store, bridge_config(tmp_path, port=1, sim_url="http://x").rulebook(),
                      ManualClock(), takers=lambda c: taker)
        with pytest.raises(RuntimeError):
            await relay.receive_phone_text(sms("c", "hello"))
        store.transaction = real  # type: ignore[method-assign]
        assert taker.taken == []
        async with store.transaction() as tx:
            assert await tx.find_message(MessageSource.SMS, "SM" + "c" * 32) is None


class TestChatLanes:
    async def test_a_text_is_posted_without_a_claim_and_marked_sent(
            self, store: Store, tmp_path: Path) -> None:
        world = World(store, tmp_path, RecordingChatNetwork(reachable=[ALICE]))
        async with world.running():
            await world.relay.receive_phone_text(sms("d", "straight through"))

            async def marked() -> bool:
                return [d.state for d in await xmtp_deliveries(store, "d")] == [
                    DeliveryState.SENT]

            await eventually(marked, "the delivery is marked sent")
        assert [s.text for s in world.chat.sent] == ["straight through"]
        [delivery] = await xmtp_deliveries(store, "d")
        assert delivery.attempts == 1 and delivery.provider_id == world.chat.sent[0].message_id

    async def test_a_stuck_conversation_does_not_hold_up_another(
            self, store: Store, tmp_path: Path) -> None:
        chat = RecordingChatNetwork(reachable=[ALICE])
        world = World(store, tmp_path, chat)
        release = asyncio.Event()
        real_send = chat.send

        async def send(group_id: str, text: str, *, key: str | None = None) -> str:
            if text == "stuck":
                await release.wait()
            return await real_send(group_id, text, key=key)

        chat.send = send  # type: ignore[method-assign]
        async with world.running():
            await world.relay.receive_phone_text(sms("e", "stuck"))
            await world.relay.receive_phone_text(sms("f", "behind it, same phone"))
            await world.relay.receive_phone_text(sms("g", "another phone", from_=PHONE_2))

            async def other_posted() -> bool:
                return [s.text for s in chat.sent] == ["another phone"]

            await eventually(other_posted, "the other conversation's text is posted")
            release.set()

            async def all_posted() -> bool:
                return len(chat.sent) == 3

            await eventually(all_posted, "the stuck lane catches up")
        assert [s.text for s in chat.sent] == ["another phone", "stuck",
                                               "behind it, same phone"], "in order per lane"

    async def test_an_unreachable_wallet_fails_the_waiting_texts_with_one_notice(
            self, store: Store, tmp_path: Path) -> None:
        world = World(store, tmp_path, RecordingChatNetwork(reachable=[]))
        for sid, body in (("h", "one"), ("i", "two"), ("j", "three")):
            await world.relay.receive_phone_text(sms(sid, body))  # pending: not running
        assert world.worker is not None
        assert await world.worker.run_once() == 3
        for sid in "hij":
            assert [d.state for d in await xmtp_deliveries(store, sid)] == [
                DeliveryState.FAILED]
        assert isinstance(store, SqlStore)
        async with store.engine.connect() as connection:  # the support rule has no greeting
            notices = (await connection.execute(sa.select(sa.func.count()).where(
                messages.c.source == MessageSource.SYSTEM.value))).scalar_one()
        assert notices == 1, "one 'cannot receive' notice, not one per text"

    async def test_stopping_hands_back_what_a_lane_had_not_started(
            self, store: Store, tmp_path: Path) -> None:
        chat = RecordingChatNetwork(reachable=[ALICE])
        world = World(store, tmp_path, chat)
        started = asyncio.Event()
        real_send = chat.send

        async def send(group_id: str, text: str, *, key: str | None = None) -> str:
            started.set()
            await asyncio.Event().wait()  # never returns: the worker stops meanwhile
            return await real_send(group_id, text, key=key)

        chat.send = send  # type: ignore[method-assign]
        async with world.running():
            await world.relay.receive_phone_text(sms("k", "in flight"))
            await world.relay.receive_phone_text(sms("l", "waiting"))
            async with asyncio.timeout(WAIT):
                await started.wait()
        [in_flight] = await xmtp_deliveries(store, "k")
        [waiting] = await xmtp_deliveries(store, "l")
        assert in_flight.state is DeliveryState.SENDING, "its outcome is for the reconciler"
        assert (waiting.state, waiting.attempts) == (DeliveryState.PENDING, 1)


class TestPhoneOutboxTakes:
    async def test_a_wallet_reply_goes_to_the_phone_without_a_claim(
            self, store: Store, tmp_path: Path) -> None:
        chat = RecordingChatNetwork(reachable=[ALICE])
        world = World(store, tmp_path, chat)
        phone = FakePhone(world.clock)
        outbox = PhoneOutbox(store, phone, world.clock,
                             OutboxSettings(rate_per_second=1000.0, poll_interval=3600,
                                            reconcile_interval=3600),
                             status_callback_url=None,
                             policy_for=lambda _rule: world.rules.get("support").outbound,  # type: ignore[union-attr]
                             render=world.relay.text_for_phone,
                             on_failed=world.relay.delivery_failed)
        world.relay._takers = lambda c: world.worker if c is Channel.XMTP else outbox
        outbox_task = asyncio.create_task(outbox.run())
        try:
            async with world.running():
                await world.relay.receive_phone_text(sms("m", "hi"))

                async def grouped() -> bool:
                    return bool(chat.sent)

                await eventually(grouped, "the group is made")
                await world.relay.receive_chat_message(ChatMessage(
                    group_id=chat.sent[0].group_id, message_id="reply-1",
                    sender=WalletAddress(ALICE), sent_at_ns=1, text="hello phone",
                    content_type="text"))
                async with asyncio.timeout(WAIT):
                    await phone.got_one.wait()
        finally:
            outbox_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await outbox_task
        assert [a.text.body for a in phone.accepted] == ["alice: hello phone"]
        async with store.transaction() as tx:
            reply = await tx.find_message(MessageSource.XMTP, "reply-1")
            assert reply is not None
            [delivery] = await tx.list_deliveries(reply.id)
        assert delivery.attempts == 1 and delivery.state is DeliveryState.SENT
