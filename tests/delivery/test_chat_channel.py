"""The chat channel's rules, driven through the relay and the engine over a real SQLite
store and the recording chat network: one post per message into a group made at first
use, a node that does not answer, a group that cannot be made, lanes per conversation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.clock import ManualClock
from gateway.domain.models import Channel, DeliveryState, MessageSource
from gateway.domain.rules import Rule, RuleBook, RuleMode
from tests.delivery.world import (
    FAST,
    OTHER_PHONE,
    OTHER_WALLET,
    OUR_NUMBER,
    PHONE,
    WALLET,
    World,
    until,
    world,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def w(tmp_path: Path) -> AsyncIterator[World]:
    async with world("sqlite", tmp_path, clock=ManualClock(T0)) as found:
        yield found


async def system_messages(w: World) -> list[str]:
    from gateway.store.tables import messages
    async with w.store.transaction() as tx:
        rows = await tx.connection.execute(messages.select().where(
            messages.c.source == MessageSource.SYSTEM.value).order_by(messages.c.created_at))
        found = []
        for row in rows:
            message = await tx.get_message(row.id)
            assert message is not None and message.body is not None
            found.append(message.body)
    return found


class TestPosting:
    async def test_a_message_is_posted_once_however_many_wallets_it_has(
            self, tmp_path: Path) -> None:
        team = RuleBook([Rule(name="team", proxy=OUR_NUMBER, channels=frozenset({Channel.SMS}),
                              mode=RuleMode.FIXED, wallets=(WALLET, OTHER_WALLET))], {})
        async with world("sqlite", tmp_path, rules=team) as w:
            await w.start()
            await w.phone_says("to the team")
            await w.settled()
            assert w.posts() == ["to the team"]
            deliveries = await w.deliveries(Channel.XMTP)
            assert len(deliveries) == 2
            assert {d.state for d in deliveries} == {DeliveryState.SENT}
            assert {d.provider_id for d in deliveries} == {w.chat.sent[0].message_id}

    async def test_a_node_down_past_every_attempt_delays_the_post_but_never_fails_it(
            self, w: World) -> None:
        await w.phone_says("anyone?")
        process = w.new_process()
        await process.holder.beat()
        w.chat.failing = True  # the node does not answer, for longer than every attempt
        for _ in range(FAST.backoff.max_attempts + 2):
            assert await process.chat.run_once() == 1
            assert isinstance(w.clock, ManualClock)
            w.clock.advance(timedelta(minutes=6))  # past the longest backoff
        [waiting] = await w.deliveries(Channel.XMTP)
        assert (waiting.state, waiting.attempts) == (DeliveryState.PENDING,
                                                     FAST.backoff.max_attempts + 2)
        assert waiting.error_message is not None and "down" in waiting.error_message
        w.chat.failing = False  # back: the post goes out, and only now is it sent
        assert await process.chat.run_once() == 1
        assert w.posts() == ["anyone?"]
        [sent] = await w.deliveries(Channel.XMTP)
        assert sent.state is DeliveryState.SENT

    async def test_a_group_made_by_a_process_that_died_before_recording_it_is_reused(
            self, w: World) -> None:
        await w.phone_says("first text")
        async with w.store.transaction() as tx:
            participant = await tx.find_phone_participant(PHONE, OUR_NUMBER)
            assert participant is not None
        # the dead process's creation, under the conversation's key; never recorded
        made = await w.chat.create_group(name="x", members=[WALLET],
                                         key=participant.conversation_id)
        process = w.new_process()
        await process.holder.beat()
        assert await process.chat.run_once() == 1
        async with w.store.transaction() as tx:
            stored = await tx.get_conversation(participant.conversation_id)
        assert stored is not None and stored.xmtp_group_id == made
        assert list(w.chat.groups) == [made]

    async def test_a_group_stored_meanwhile_wins_over_the_one_just_made(
            self, w: World) -> None:
        await w.phone_says("first text")
        async with w.store.transaction() as tx:
            participant = await tx.find_phone_participant(PHONE, OUR_NUMBER)
            assert participant is not None
        real_create = w.chat.create_group
        theirs: list[str] = []

        async def racing_create(*, name: str, members: Any, key: str | None = None) -> str:
            # another process gives the conversation its group while this one makes one
            theirs.append(await real_create(name=name, members=members))
            async with w.store.transaction() as tx:
                await tx.set_conversation_group(participant.conversation_id, theirs[0])
            return await real_create(name=name, members=members)

        w.chat.create_group = racing_create  # type: ignore[method-assign]
        process = w.new_process()
        await process.holder.beat()
        assert await process.chat.run_once() == 1
        async with w.store.transaction() as tx:
            stored = await tx.get_conversation(participant.conversation_id)
        assert stored is not None and stored.xmtp_group_id == theirs[0]
        assert [s.group_id for s in w.chat.sent] == theirs


    async def test_a_conversation_deleted_while_its_post_is_in_flight_holds_up_nothing(
            self, tmp_path: Path) -> None:
        from gateway.store.queries import queries_for
        async with world("sqlite", tmp_path) as w:
            w.chat.hold = asyncio.Event()
            await w.start()
            await w.phone_says("in flight")
            await until(lambda: _found(w.posts() == ["in flight"]))
            await w.phone_says("another phone", phone=OTHER_PHONE)
            async with w.store.transaction() as tx:
                gone = await tx.find_phone_participant(PHONE, OUR_NUMBER)
                assert gone is not None
                queries = queries_for(w.store)  # type: ignore[arg-type]
                await queries.delete_conversation(tx, gone.conversation_id, now=w.clock.now(),
                                                  removed_event={})
                await queries.close()
            w.chat.hold.set()  # the post answers: its delivery is gone, nothing to write
            await w.settled()
            assert w.posts() == ["in flight", "another phone"]
            [other] = await w.deliveries(Channel.XMTP)
            assert other.state is DeliveryState.SENT


class TestUnreachableWallets:
    async def test_an_unreachable_wallet_fails_the_waiting_texts_with_one_notice(
            self, w: World) -> None:
        w.chat.reachable.clear()
        for body in ("one", "two", "three"):
            await w.phone_says(body)  # pending: no engine runs
        process = w.new_process()
        await process.holder.beat()
        assert await process.chat.run_once() == 1  # the lane's head; the rest fail with it
        assert {d.state for d in await w.deliveries(Channel.XMTP)} == {DeliveryState.FAILED}
        assert await system_messages(w) == [
            "Sorry, 0xAb58…eC9B cannot receive messages: that wallet is not on XMTP."]


class TestLanes:
    async def test_a_stuck_conversation_does_not_hold_up_another(self, tmp_path: Path) -> None:
        async with world("sqlite", tmp_path) as w:
            release = asyncio.Event()
            real_send = w.chat.send

            async def send(group_id: str, text: str, *, key: str | None = None) -> str:
                if text == "stuck":
                    await release.wait()
                return await real_send(group_id, text, key=key)

            w.chat.send = send  # type: ignore[method-assign]
            await w.start()
            await w.phone_says("stuck")
            await w.phone_says("behind it, same phone")
            await w.phone_says("another phone", phone=OTHER_PHONE)
            await until(lambda: _found(w.posts() == ["another phone"]))
            release.set()
            await w.settled()
            assert w.posts() == ["another phone", "stuck", "behind it, same phone"]

    async def test_a_post_waiting_in_the_chat_network_keeps_its_lease_on_stop(
            self, tmp_path: Path) -> None:
        async with world("sqlite", tmp_path,
                         chat_settings=replace(FAST, lease=30.0)) as w:
            w.chat.hold = asyncio.Event()  # the post never answers: the process stops
            await w.start()
            await w.phone_says("in flight")
            await w.phone_says("waiting")
            await until(lambda: _found(w.posts() == ["in flight"]))
            await w.stop()
            in_flight, waiting = sorted(await w.deliveries(Channel.XMTP),
                                        key=lambda d: d.created_at)
            assert in_flight.state is DeliveryState.SENDING  # its outcome: the reconciler's
            assert (waiting.state, waiting.attempts) == (DeliveryState.PENDING, 0)


async def _found(value: bool) -> bool | None:
    return True if value else None
