"""The outbox engine's contract, for both channels, on SQLite and PostgreSQL: order kept
across retries, a restart that resumes at once, a process stopped dead at any point
losing nothing and doubling nothing, unknown outcomes looked up (never blindly sent
again), two processes never holding the same delivery, late results fenced off."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.delivery import Backoff, PacingSettings
from gateway.domain.ids import PhoneNumber
from gateway.domain.models import Channel, DeliveryJob, DeliveryState
from gateway.domain.ports import LeaseOffer
from gateway.errors import RetryableSendError, UnknownOutcomeError
from tests.delivery.world import FAST, PHONE, World, until, world
from tests.fixtures.api_app import BACKENDS


@pytest.fixture(params=BACKENDS)
async def w(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    async with world(request.param, tmp_path) as found:
        yield found


async def conversation(w: World, phone: PhoneNumber = PHONE) -> None:
    """The phone opens a conversation with the rule's wallet (its group made)."""
    await w.phone_says("hi", phone=phone)
    await w.group_of(phone)
    await w.settled(Channel.XMTP)


class TestOrder:
    async def test_a_phones_texts_leave_in_order_across_a_retry(self, w: World) -> None:
        await w.start()
        await conversation(w)
        w.phone.script = [RetryableSendError("busy", provider_code=20429)]
        for n in range(1, 4):
            await w.wallet_says(f"text {n}")
        await w.settled()
        assert w.texts_to_phone() == ["text 1", "text 2", "text 3"]
        first = min(await w.deliveries(Channel.SMS), key=lambda d: d.created_at)
        assert first.attempts == 2

    async def test_a_text_claimed_at_birth_waits_for_a_retry_written_before_its_handover(
            self, w: World) -> None:
        """The next text is born claimed (the first is still held here, in flight); the
        first's retry is written and a claim runs before the engine is handed the next
        one. The engine must still see that the first went back to wait: the next one
        goes after it, not before."""
        # a backoff long enough that the first is still waiting at the handover
        w.settings = replace(w.settings, backoff=Backoff(base=2.0, cap=2.0, max_attempts=4))
        process = await w.start()
        await conversation(w)
        engine = process.phone
        handovers: list[tuple[DeliveryJob, LeaseOffer]] = []
        take = engine.take

        def held_back(job: DeliveryJob, offer: LeaseOffer) -> None:
            if job.message.body == "second":
                handovers.append((job, offer))  # handed over below, when the test says
            else:
                take(job, offer)

        engine.take = held_back  # type: ignore[method-assign]
        w.phone.script = [RetryableSendError("busy", provider_code=20429)]
        w.settle_gate = asyncio.Event()  # the first's result waits to be written
        await w.wallet_says("first")
        await until(lambda: _true_if(not w.phone.script))  # tried, and refused
        await w.wallet_says("second")  # born claimed: the first is held here
        [(job, offer)] = handovers
        w.settle_gate.set()  # the first's retry is written, then a claim looks

        async def retry_written() -> bool | None:
            return _truthy(any(d.state is DeliveryState.PENDING
                               for d in await w.deliveries(Channel.SMS)))

        await until(retry_written)
        assert w.ledger is not None
        claims = w.ledger.claims
        await until(lambda: _true_if(w.ledger is not None and w.ledger.claims > claims))
        take(job, offer)
        await w.settled()
        assert w.texts_to_phone() == ["first", "second"]  # not before it, at its turn

    async def test_a_conversations_posts_leave_in_order_across_a_node_outage(
            self, w: World) -> None:
        await w.start()
        await conversation(w)
        w.chat.failing = True
        await w.phone_says("one")
        await w.phone_says("two")

        async def retried() -> bool | None:  # "one" failed at least once, and waits
            return _truthy(any(d.error_message and d.state is DeliveryState.PENDING
                               for d in await w.deliveries(Channel.XMTP)))
        await until(retried)
        w.chat.failing = False
        await w.settled()
        assert w.posts() == ["hi", "one", "two"]

    async def test_a_retry_goes_out_when_due_not_at_the_next_poll(
            self, tmp_path: Path) -> None:
        async with world("sqlite", tmp_path) as w:
            w.settings = w.chat_settings = replace(FAST, poll_interval=30.0)
            await w.start()
            await conversation(w)
            w.phone.script = [RetryableSendError("busy", provider_code=20429)]
            started = asyncio.get_running_loop().time()
            await w.wallet_says("soon")
            await w.settled(within=5.0)
            assert asyncio.get_running_loop().time() - started < 5.0
            assert w.texts_to_phone() == ["soon"]


class TestRestart:
    async def test_a_restart_takes_back_what_the_dead_process_held_at_once(
            self, w: World) -> None:
        process = await w.start()
        await conversation(w)
        w.phone.hold = asyncio.Event()  # Twilio took it; the answer never comes back
        await w.wallet_says("in flight")
        await until(lambda: _true_if(bool(w.phone.accepted[-1:]) and
                                     w.phone.accepted[-1].text.body == "in flight"))
        await w.wallet_says("behind it")
        await w.kill()
        w.phone.hold = None
        started = asyncio.get_running_loop().time()
        await w.start(process.holder.id)  # the same data directory: the same holder
        await w.settled(within=10.0)
        assert asyncio.get_running_loop().time() - started < FAST.lease / 2
        assert w.texts_to_phone() == ["in flight", "behind it"]  # looked up, not re-sent

    async def test_what_a_restart_takes_back_is_looked_up_even_when_its_sender_is_busy(
            self, w: World) -> None:
        # a slow sender holds little: most of the backlog waits in the outbox, and what
        # the dead process held must still be looked up, never handed back as untried
        w.settings = replace(w.settings, lease=6.0, send_timeout=1.0, lease_margin=0.5,
                             pacing=PacingSettings(default=2.0))  # it holds 4 at most
        process = await w.start()
        await conversation(w)
        w.phone.hold = asyncio.Event()
        for n in range(1, 11):
            await w.wallet_says(f"text {n}")
        await until(lambda: _true_if(len(w.phone.accepted) == 1))
        await w.kill()
        w.phone.hold = None
        w.reconcile_settle = 5.0  # most of a lease: new texts are claimed meanwhile
        await w.start(process.holder.id)
        await w.settled(within=20.0)
        assert w.texts_to_phone() == [f"text {n}" for n in range(1, 11)]

    async def test_a_post_in_flight_is_published_again_never_twice(self, w: World) -> None:
        process = await w.start()
        await conversation(w)
        w.chat.hold = asyncio.Event()
        await w.phone_says("in flight")
        await until(lambda: _true_if(w.posts()[-1:] == ["in flight"]))
        await w.phone_says("behind it")
        await w.kill()
        w.chat.hold = None
        await w.start(process.holder.id)
        await w.settled(within=10.0)
        assert w.posts() == ["hi", "in flight", "behind it"]
        assert [p.text for p in w.chat.republished] == ["in flight"]

    @pytest.mark.parametrize("point", ["before the send", "after the send",
                                       "before the result is written"])
    async def test_a_process_stopped_dead_loses_nothing_and_doubles_nothing(
            self, w: World, point: str) -> None:
        process = await w.start()
        await conversation(w)
        if point == "before the send":
            w.phone.delay = 60.0  # every send hangs before it reaches Twilio
        elif point == "after the send":
            w.phone.hold = asyncio.Event()
        else:
            w.settle_gate = asyncio.Event()
        for n in range(1, 4):
            await w.wallet_says(f"text {n}")
        if point != "before the send":
            await until(lambda: _true_if(len(w.phone.accepted) >= 1))
        await w.kill()
        w.phone.delay, w.phone.hold, w.settle_gate = 0.0, None, None
        await w.start(process.holder.id)
        await w.settled(within=10.0)
        assert w.texts_to_phone() == ["text 1", "text 2", "text 3"]
        assert {d.state for d in await w.deliveries(Channel.SMS)} == {DeliveryState.SENT}

    async def test_another_process_takes_over_from_a_dead_one_once_its_heartbeat_ends(
            self, w: World) -> None:
        w.alive_seconds = 1.0
        await w.start()
        await conversation(w)
        w.phone.hold = asyncio.Event()
        await w.wallet_says("in flight")
        await until(lambda: _true_if(len(w.phone.accepted) >= 1))
        await w.kill()
        w.phone.hold = None
        await w.start()  # a new process (a new holder): it waits out the dead heartbeat
        await w.settled(within=10.0)
        assert w.texts_to_phone() == ["in flight"]


class TestUnknownOutcomes:
    async def test_an_unknown_outcome_is_looked_up_never_sent_again(self, w: World) -> None:
        await w.start()
        await conversation(w)
        sent_silently: list[str] = []

        async def send(text):  # type: ignore[no-untyped-def]
            sent_silently.append(w.phone.accept_silently(text))
            raise UnknownOutcomeError("the connection dropped after the request left")

        original = w.phone.send
        w.phone.send = send  # type: ignore[method-assign]
        await w.wallet_says("maybe")
        await until(lambda: _true_if(bool(sent_silently)))
        w.phone.send = original  # type: ignore[method-assign]
        await w.settled()
        assert w.texts_to_phone() == ["maybe"]
        [delivery] = await w.deliveries(Channel.SMS)
        assert delivery.provider_id == sent_silently[0]

    async def test_a_send_that_never_left_is_sent_after_the_lookup(self, w: World) -> None:
        await w.start()
        await conversation(w)
        w.phone.script = [UnknownOutcomeError("timed out")]  # it never reached Twilio
        await w.wallet_says("again")
        await w.settled()
        assert w.texts_to_phone() == ["again"]
        assert w.phone.lookups, "the outcome was looked up before sending again"


class TestSeveralProcesses:
    async def test_two_processes_send_each_text_once_and_each_phones_in_order(
            self, w: World) -> None:
        phones = [PhoneNumber(f"+1415555{n:04d}") for n in range(6)]
        first = await w.start()
        for phone in phones:
            await conversation(w, phone)
        await w.stop()
        # two processes on one outbox: the texts were recorded while none ran
        for n in range(1, 4):
            for phone in phones:
                await w.wallet_says(f"{phone} text {n}", phone=phone)
        a, b = w.new_process(), w.new_process(first.holder.id)
        for process in (a, b):
            await process.holder.beat()
        tasks = [asyncio.create_task(e.run()) for e in (a.phone, b.phone)]
        try:
            await w.settled(Channel.SMS, within=20.0)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for phone in phones:
            assert w.texts_to_phone(phone) == [f"{phone} text {n}" for n in range(1, 4)]


class TestFencing:
    async def test_a_send_that_outlives_its_lease_is_not_written_over_its_new_owner(
            self, tmp_path: Path) -> None:
        short = replace(FAST, lease=3.0, send_timeout=0.5, lease_margin=0.2)
        async with world("sqlite", tmp_path, settings=short) as w:
            await w.start()
            await conversation(w)
            w.phone.hold = asyncio.Event()  # Twilio took it; this process stalls
            await w.wallet_says("slow")
            await until(lambda: _true_if(len(w.phone.accepted) == 1))
            other = w.new_process()  # another process reconciles once the lease ran out
            await other.holder.beat()
            await asyncio.sleep(short.lease)  # the lease runs out (real time: its clock)

            async def taken_over() -> bool | None:  # bounded: a loaded machine is slower
                return True if await other.phone.reconcile_once() == 1 else None
            await until(taken_over)
            [delivery] = await w.deliveries(Channel.SMS)
            assert delivery.state is DeliveryState.SENT  # found at Twilio by the other
            w.phone.hold.set()  # the stalled send answers, late
            await w.settled()
            assert w.texts_to_phone() == ["slow"]
            [after] = await w.deliveries(Channel.SMS)
            assert after.provider_id == delivery.provider_id


def _truthy(value: bool) -> bool | None:
    return True if value else None


async def _true(value: bool) -> bool | None:
    return _truthy(value)


def _true_if(value: bool):  # type: ignore[no-untyped-def]
    return _true(value)
