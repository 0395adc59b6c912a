"""The XMTP delivery worker over a real SQLite store: a send a dead worker left
unfinished is posted again with the same key (libxmtp then publishes the message it
already prepared), and only by the chat worker, never by the phone outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.clock import ManualClock
from gateway.domain.models import Channel, DeliveryState, MessageSource
from gateway.domain.ports import Store
from gateway.domain.relay import PhoneText, Relay
from gateway.metrics import Metrics
from gateway.store.sql import open_store
from gateway.testing.chat_fake import RecordingChatNetwork
from gateway.workers import ChatDeliveryWorker, Waker
from tests.integration.bridge_harness import ALICE, PHONE, SUPPORT, bridge_config


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(f"sqlite+aiosqlite:///{tmp_path}/gateway.db",
                             keys={"k1": bytes(range(32))}, active_key="k1")
    yield store
    await store.close()


async def _phone_texted(store: Store, tmp_path: Path, sid: str,
                        body: str) -> tuple[ManualClock, Relay, RecordingChatNetwork]:
    """A support-line relay over ``store`` after a phone's text put a post in the outbox."""
    clock = ManualClock()
    rules = bridge_config(tmp_path, port=1, sim_url="http://127.0.0.1:9").rulebook()
    relay = Relay(store, rules, clock)
    await relay.receive_phone_text(PhoneText(
        external_id=sid, from_=PHONE, to=SUPPORT,  # type: ignore[arg-type]
        channel=Channel.SMS, body=body))
    return clock, relay, RecordingChatNetwork(reachable=[ALICE])


class TestChatDeliveryRecovery:
    async def test_an_abandoned_send_is_posted_again_with_its_key_once(
            self, store: Store, tmp_path: Path) -> None:
        clock, relay, chat = await _phone_texted(store, tmp_path, "SM" + "a" * 32,
                                                 "are you there?")
        async with store.transaction() as tx:  # a worker claims, then dies
            [abandoned] = await tx.claim_deliveries(
                [Channel.XMTP], now=clock.now(), lease_until=clock.now() + timedelta(seconds=30),
                limit=10)

        worker = ChatDeliveryWorker(store, chat, relay, clock, Metrics(), Waker(),
                                    lease_seconds=60)
        assert await worker.run_once() == 0, "still leased to the dead worker"
        assert chat.sent == []

        clock.advance(timedelta(seconds=31))
        assert await worker.run_once() == 1
        assert [(s.text, s.key) for s in chat.sent] == [
            ("are you there?", abandoned.message.id)]
        assert await worker.run_once() == 0
        async with store.transaction() as tx:
            message = await tx.find_message(MessageSource.SMS, "SM" + "a" * 32)
            assert message is not None
            [delivery] = await tx.list_deliveries(message.id)
        assert delivery.state is DeliveryState.SENT
        assert delivery.provider_id == chat.sent[0].message_id

    async def test_a_node_down_past_every_attempt_delays_the_post_but_never_fails_it(
            self, store: Store, tmp_path: Path) -> None:
        clock, relay, chat = await _phone_texted(store, tmp_path, "SM" + "b" * 32,
                                                 "anyone?")
        worker = ChatDeliveryWorker(store, chat, relay, clock, Metrics(), Waker(),
                                    max_attempts=3)
        chat.failing = True  # the node does not answer, for longer than 3 attempts
        for _ in range(6):
            assert await worker.run_once() == 1
            clock.advance(timedelta(minutes=6))  # past the longest backoff
        async with store.transaction() as tx:
            message = await tx.find_message(MessageSource.SMS, "SM" + "b" * 32)
            assert message is not None
            [waiting] = await tx.list_deliveries(message.id)
        assert (waiting.state, waiting.attempts) == (DeliveryState.PENDING, 6)
        assert waiting.error_message is not None and "down" in waiting.error_message

        chat.failing = False  # back: the post goes out, and only now is it sent
        assert await worker.run_once() == 1
        assert [s.text for s in chat.sent] == ["anyone?"]
        async with store.transaction() as tx:
            [sent] = await tx.list_deliveries(message.id)
        assert sent.state is DeliveryState.SENT

    async def test_a_group_stored_meanwhile_wins_over_the_one_just_made(
            self, store: Store, tmp_path: Path) -> None:
        clock, relay, chat = await _phone_texted(store, tmp_path, "SM" + "b" * 32,
                                                 "first text")
        async with store.transaction() as tx:
            conversation = (await tx.find_phone_participant(PHONE, SUPPORT))  # type: ignore[arg-type]
            assert conversation is not None
            conversation_id = conversation.conversation_id

        real_create = chat.create_group
        theirs: list[str] = []

        async def racing_create(*, name: str, members: Any) -> str:
            # another process gives the conversation its group while this one makes one
            theirs.append(await real_create(name=name, members=members))
            async with store.transaction() as tx:
                await tx.set_conversation_group(conversation_id, theirs[0])
            return await real_create(name=name, members=members)

        chat.create_group = racing_create  # type: ignore[method-assign]
        worker = ChatDeliveryWorker(store, chat, relay, clock, Metrics(), Waker())
        assert await worker.run_once() == 1
        async with store.transaction() as tx:
            stored = await tx.get_conversation(conversation_id)
        assert stored is not None and stored.xmtp_group_id == theirs[0]
        assert [s.group_id for s in chat.sent] == theirs
