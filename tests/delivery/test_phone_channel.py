"""The phone channel's rules, driven through the relay and the engine over a real SQLite
store: what a text becomes, who may be texted (the number's rule, for rule-made and
API-made conversations alike), the WhatsApp window, send errors, long bodies, pacing."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.delivery import Backoff, PacingSettings
from gateway.domain.clock import ManualClock
from gateway.domain.ids import PhoneNumber
from gateway.domain.models import Channel, Delivery, DeliveryState, Media, MessageSource
from gateway.domain.policy import (
    REFUSED_NEVER_TEXTED_IN,
    REFUSED_OPTED_OUT,
    REFUSED_PHONE_QUOTA,
    REFUSED_RULE_QUOTA,
    REFUSED_WHATSAPP_WINDOW,
    OutboundPolicy,
    WhatsAppTemplate,
)
from gateway.domain.ports import NewParticipant
from gateway.errors import PermanentSendError, RetryableSendError, UnknownOutcomeError
from tests.delivery.world import (
    FAST,
    OTHER_PHONE,
    OUR_NUMBER,
    PHONE,
    Process,
    World,
    rulebook,
    world,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CALLBACK = "https://gw.example/twilio/status"
WORDS = " ".join(f"word{i:04d}" for i in range(400))  # 3,599 characters


@pytest.fixture
async def w(tmp_path: Path) -> AsyncIterator[World]:
    async with world("sqlite", tmp_path, clock=ManualClock(T0),
                     rules=rulebook(label="Alice: ")) as found:
        yield found


async def engine(w: World) -> Process:
    """A process that is not taking deliveries at birth: its claims are the test's."""
    process = w.new_process()
    await process.holder.beat()
    return process


async def to_phone(w: World, body: str = "hello", *, phone: PhoneNumber = PHONE,
                   channel: Channel = Channel.SMS, media: tuple[Media, ...] = ()) -> Delivery:
    """The wallet's text to a phone that texted in (the phone's text opens the
    conversation; its post into the group is left undone)."""
    conversation_id = await _conversation_with(w, phone, channel)
    message = await w.api_send(conversation_id, body, media=media)
    return await _delivery_of(w, message.id)


async def _conversation_with(w: World, phone: PhoneNumber, channel: Channel):  # type: ignore[no-untyped-def]
    async with w.store.transaction() as tx:
        found = await tx.find_phone_participant(phone, OUR_NUMBER, channel)
    if found is None:
        await w.phone_says("hi", phone=phone, channel=channel)
        async with w.store.transaction() as tx:
            found = await tx.find_phone_participant(phone, OUR_NUMBER, channel)
    assert found is not None
    return found.conversation_id


async def _delivery_of(w: World, message_id: str) -> Delivery:
    async with w.store.transaction() as tx:
        [delivery] = [d for d in await tx.list_deliveries(message_id)  # type: ignore[arg-type]
                      if d.channel is not Channel.XMTP]
    return delivery


async def now_of(w: World, delivery: Delivery) -> Delivery:
    async with w.store.transaction() as tx:
        found = await tx.get_delivery(delivery.id)
    assert found is not None
    return found


def later(w: World, seconds: float) -> None:
    assert isinstance(w.clock, ManualClock)
    w.clock.advance(timedelta(seconds=seconds))


async def notices(w: World) -> list[str]:
    """What the gateway told the wallets (its own messages posted into groups)."""
    found = []
    async with w.store.transaction() as tx:
        participant = await tx.find_phone_participant(PHONE, OUR_NUMBER, Channel.SMS)
        if participant is None:
            return []
        from gateway.store.tables import messages
        rows = await tx.connection.execute(messages.select().where(
            messages.c.conversation_id == participant.conversation_id,
            messages.c.source == MessageSource.SYSTEM.value))
        for row in rows:
            message = await tx.get_message(row.id)
            assert message is not None
            found.append(message.body or "")
    return found


class TestSendingADelivery:
    async def test_the_rendered_text_goes_from_our_number_with_the_status_callback(
            self, w: World) -> None:
        delivery = await to_phone(w, "hi")
        assert await (await engine(w)).phone.run_once() == 1
        [text] = w.phone.attempts
        assert (text.to, text.from_, text.channel, text.body, text.status_callback) == (
            PHONE, OUR_NUMBER, Channel.SMS, "Alice: hi", CALLBACK)
        after = await now_of(w, delivery)
        assert (after.state, after.provider_id) == (DeliveryState.SENT,
                                                    w.phone.accepted[0].sid)

    async def test_one_message_to_two_phones_reaches_both(self, tmp_path: Path) -> None:
        async with world("sqlite", tmp_path, rules=rulebook(
                OutboundPolicy(allow_unsolicited=True))) as w:
            conversation = await w.api_conversation(PHONE)
            async with w.store.transaction() as tx:
                await tx.add_participant(NewParticipant(
                    conversation, Channel.SMS, address=OTHER_PHONE, proxy_address=OUR_NUMBER),
                    now=w.clock.now())
            await w.start()  # taken at birth, both: one message, two lanes
            await w.api_send(conversation, "to you both")
            await w.settled()
            assert sorted(a.text.to for a in w.phone.accepted) == sorted([PHONE, OTHER_PHONE])

    async def test_media_goes_with_the_text(self, w: World) -> None:
        await to_phone(w, media=(Media("https://example.org/a.png", "image/png"),))
        await (await engine(w)).phone.run_once()
        assert w.phone.attempts[0].media_urls == ("https://example.org/a.png",)

    async def test_an_empty_text_without_media_is_failed_not_sent(self, w: World) -> None:
        w.rules = rulebook(label="")
        process = await engine(w)
        delivery = await to_phone(w, "  ")
        await process.phone.run_once()
        assert w.phone.attempts == []
        assert (await now_of(w, delivery)).state is DeliveryState.FAILED


class TestPolicy:
    async def test_a_phone_that_never_texted_in_is_not_texted(self, w: World) -> None:
        message = await w.api_send(await w.api_conversation(), "hello")
        await (await engine(w)).phone.run_once()
        assert w.phone.attempts == []
        delivery = await _delivery_of(w, message.id)
        assert (delivery.state, delivery.error_code) == (DeliveryState.FAILED,
                                                         REFUSED_NEVER_TEXTED_IN)

    async def test_an_api_conversation_follows_its_numbers_rule(self, tmp_path: Path) -> None:
        async with world("sqlite", tmp_path, clock=ManualClock(T0), rules=rulebook(
                OutboundPolicy(allow_unsolicited=True))) as w:
            message = await w.api_send(await w.api_conversation(), "hello")
            await (await engine(w)).phone.run_once()
            assert w.texts_to_phone() == ["hello"]
            assert (await _delivery_of(w, message.id)).state is DeliveryState.SENT

    async def test_an_api_conversations_texts_count_against_its_numbers_quota(
            self, tmp_path: Path) -> None:
        async with world("sqlite", tmp_path, clock=ManualClock(T0), rules=rulebook(
                OutboundPolicy(allow_unsolicited=True, per_rule_daily=1))) as w:
            conversation = await w.api_conversation()
            await w.api_send(conversation, "one")
            later(w, 1)
            second = await w.api_send(conversation, "two")
            later(w, 1)
            process = await engine(w)
            await process.phone.run_once()
            await process.phone.run_once()
            assert w.texts_to_phone() == ["one"]
            assert (await _delivery_of(w, second.id)).error_code == REFUSED_RULE_QUOTA

    async def test_a_phone_that_said_stop_is_not_texted_and_the_wallet_is_told(
            self, w: World) -> None:
        await w.phone_says("hi")
        await w.phone_says("STOP")
        delivery = await to_phone(w)
        await (await engine(w)).phone.run_once()
        assert w.phone.attempts == []
        assert (await now_of(w, delivery)).error_code == REFUSED_OPTED_OUT
        assert any(n.startswith("Not delivered to +1 415-555-0123: the phone replied STOP")
                   for n in await notices(w))

    async def test_the_daily_phone_quota_counts_only_earlier_deliveries(
            self, tmp_path: Path) -> None:
        async with world("sqlite", tmp_path, clock=ManualClock(T0), rules=rulebook(
                OutboundPolicy(per_phone_daily=2), label="Alice: ")) as w:
            deliveries = []
            for i in range(3):
                deliveries.append(await to_phone(w, f"m{i}"))
                later(w, 1)
            process = await engine(w)
            for _ in range(3):
                await process.phone.run_once()
            assert w.phone.bodies == ["Alice: m0", "Alice: m1"]
            assert (await now_of(w, deliveries[2])).error_code == REFUSED_PHONE_QUOTA

    async def test_deliveries_older_than_a_day_do_not_count(self, tmp_path: Path) -> None:
        async with world("sqlite", tmp_path, clock=ManualClock(T0), rules=rulebook(
                OutboundPolicy(per_phone_daily=1))) as w:
            await to_phone(w, "old")
            process = await engine(w)
            await process.phone.run_once()
            later(w, 25 * 3600)
            await w.phone_says("still here")  # texted in again, the window aside
            await to_phone(w, "new")
            await process.phone.run_once()
            assert w.phone.bodies == ["old", "new"]

    async def test_the_daily_rule_quota_spans_phones(self, tmp_path: Path) -> None:
        async with world("sqlite", tmp_path, clock=ManualClock(T0), rules=rulebook(
                OutboundPolicy(per_rule_daily=1))) as w:
            await to_phone(w, phone=PHONE)
            later(w, 1)
            second = await to_phone(w, phone=OTHER_PHONE)
            later(w, 1)
            process = await engine(w)
            await process.phone.run_once()
            await process.phone.run_once()
            assert len(w.phone.accepted) == 1
            assert (await now_of(w, second)).error_code == REFUSED_RULE_QUOTA


class TestWhatsAppWindow:
    async def test_texting_in_by_sms_opens_nothing_on_whatsapp(self, w: World) -> None:
        await w.phone_says("by sms")
        conversation = await w.api_conversation(channel=Channel.WHATSAPP)
        message = await w.api_send(conversation, "hello")
        await (await engine(w)).phone.run_once()
        assert w.phone.attempts == []
        assert (await _delivery_of(w, message.id)).error_code == REFUSED_NEVER_TEXTED_IN

    async def test_inside_the_window_the_text_goes_as_is(self, w: World) -> None:
        await to_phone(w, channel=Channel.WHATSAPP)
        later(w, 3600)
        await (await engine(w)).phone.run_once()
        text = w.phone.attempts[0]
        assert (text.channel, text.body, text.content_sid) == (
            Channel.WHATSAPP, "Alice: hello", None)

    async def test_outside_the_window_only_the_rules_template_goes(
            self, tmp_path: Path) -> None:
        template = WhatsAppTemplate("HX" + "1" * 32, {"1": "Alice"})
        async with world("sqlite", tmp_path, clock=ManualClock(T0), rules=rulebook(
                OutboundPolicy(whatsapp_template=template))) as w:
            conversation = await _conversation_with(w, PHONE, Channel.WHATSAPP)
            later(w, 25 * 3600)
            await w.api_send(conversation, "hello")
            await (await engine(w)).phone.run_once()
            text = w.phone.attempts[0]
            assert (text.body, text.content_sid, text.content_variables) == (
                None, template.content_sid, {"1": "Alice"})

    async def test_outside_the_window_without_a_template_nothing_goes(self, w: World) -> None:
        conversation = await _conversation_with(w, PHONE, Channel.WHATSAPP)
        later(w, 25 * 3600)
        message = await w.api_send(conversation, "hello")
        await (await engine(w)).phone.run_once()
        assert w.phone.attempts == []
        assert (await _delivery_of(w, message.id)).error_code == REFUSED_WHATSAPP_WINDOW


class TestSendErrors:
    async def test_a_retryable_error_waits_at_least_retry_after(self, w: World) -> None:
        delivery = await to_phone(w)
        w.phone.script = [RetryableSendError("429", retry_after=30, provider_code=20429)]
        await (await engine(w)).phone.run_once()
        after = await now_of(w, delivery)
        assert after.state is DeliveryState.PENDING and after.error_code == 20429
        assert after.next_attempt_at is not None
        assert after.next_attempt_at >= w.clock.now() + timedelta(seconds=30)

    async def test_after_max_attempts_the_delivery_fails_with_the_code_kept(
            self, w: World) -> None:
        delivery = await to_phone(w)
        process = await engine(w)
        for _ in range(FAST.backoff.max_attempts):
            w.phone.script = [RetryableSendError("busy", provider_code=20429)]
            later(w, 3600)
            await process.phone.run_once()
        after = await now_of(w, delivery)
        assert (after.state, after.error_code) == (DeliveryState.FAILED, 20429)
        assert after.attempts == FAST.backoff.max_attempts
        assert any("gave up after 4 attempts" in n for n in await notices(w))

    async def test_a_permanent_error_ends_the_delivery_and_tells_the_author(
            self, w: World) -> None:
        delivery = await to_phone(w)
        w.phone.script = [PermanentSendError("unsubscribed", provider_code=21610)]
        await (await engine(w)).phone.run_once()
        after = await now_of(w, delivery)
        assert (after.state, after.error_code) == (DeliveryState.FAILED, 21610)
        assert "Not delivered to +1 415-555-0123: unsubscribed (error 21610)." in \
            await notices(w)

    async def test_a_429_pauses_the_whole_sender(self, w: World) -> None:
        await to_phone(w, "a", phone=PHONE)
        await to_phone(w, "b", phone=OTHER_PHONE)
        w.phone.script = [RetryableSendError("429", retry_after=0.3)]
        started = asyncio.get_running_loop().time()
        await (await engine(w)).phone.run_once()
        [accepted] = w.phone.accepted  # the other one was refused, and retries later
        assert accepted.at - started >= 0.25

    async def test_a_send_that_would_outlast_its_lease_is_handed_back_not_slept_on(
            self, w: World) -> None:
        w.settings = replace(FAST, lease=10.0, send_timeout=2.0, lease_margin=1.0,
                             pacing=PacingSettings(default=10.0))
        first = await to_phone(w, "a", phone=PHONE)
        second = await to_phone(w, "b", phone=OTHER_PHONE)
        w.phone.script = [RetryableSendError("429", retry_after=20, provider_code=20429)]
        async with asyncio.timeout(2):  # a 20 s pause must not be slept inside the lease
            await (await engine(w)).phone.run_once()
        assert len(w.phone.attempts) == 1  # whichever went first was refused...
        tried, untried = sorted([await now_of(w, first), await now_of(w, second)],
                                key=lambda d: d.attempts, reverse=True)
        assert (tried.error_code, tried.attempts) == (20429, 1)
        # ...and the other, paused with its sender, was handed back untried
        assert (untried.state, untried.error_code, untried.attempts) == (
            DeliveryState.PENDING, None, 0)
        assert untried.next_attempt_at is not None
        assert untried.next_attempt_at >= w.clock.now() + timedelta(seconds=19)

    def test_backoff_grows_exponentially_with_full_jitter(self) -> None:
        backoff = Backoff(base=2.0, cap=300.0, max_attempts=10)
        for attempt in (1, 2, 3):
            seen = [backoff.delay(attempt) for _ in range(50)]
            assert all(0 <= d <= 2.0 * 2 ** (attempt - 1) for d in seen)
            assert len(set(seen)) > 1  # jittered, not fixed
        assert backoff.delay(3, at_least=30) >= 30
        assert backoff.ceiling(40) == 300.0


class TestUnknownOutcome:
    async def test_reconcile_does_not_take_an_earlier_identical_text_for_this_one(
            self, w: World) -> None:
        first = await to_phone(w, "ok")
        second = await to_phone(w, "ok")
        w.phone.script = [None, UnknownOutcomeError("timeout")]
        process = await engine(w)
        await process.phone.run_once()
        await process.phone.run_once()
        [earlier] = w.phone.accepted
        assert (await now_of(w, first)).provider_id == earlier.sid
        await process.phone.reconcile_once()
        assert w.phone.lookups[0]["skip"] == {earlier.sid}
        await process.phone.run_once()
        assert w.phone.bodies == ["Alice: ok", "Alice: ok"]
        assert (await now_of(w, second)).provider_id == w.phone.accepted[1].sid

    async def test_unknown_outcomes_end_after_max_attempts_when_nothing_went_out(
            self, w: World) -> None:
        delivery = await to_phone(w)
        process = await engine(w)
        for _ in range(FAST.backoff.max_attempts):
            w.phone.script = [UnknownOutcomeError("timeout")]
            await process.phone.run_once()
            await process.phone.reconcile_once()
        assert len(w.phone.attempts) == FAST.backoff.max_attempts
        assert (await now_of(w, delivery)).state is DeliveryState.FAILED
        await process.phone.run_once()
        assert len(w.phone.attempts) == FAST.backoff.max_attempts

    async def test_a_failed_lookup_leaves_it_unknown(self, w: World) -> None:
        delivery = await to_phone(w)
        w.phone.script = [UnknownOutcomeError("timeout")]
        process = await engine(w)
        await process.phone.run_once()

        async def broken(**kwargs: object) -> None:
            raise RetryableSendError("list failed")

        w.phone.find_sent = broken  # type: ignore[method-assign, assignment]
        await process.phone.reconcile_once()
        assert (await now_of(w, delivery)).state is DeliveryState.UNKNOWN


class TestLongBodies:
    async def test_a_long_body_goes_in_parts_and_the_last_sid_is_kept(self, w: World) -> None:
        delivery = await to_phone(w, WORDS, media=(Media("https://example.org/a.png"),))
        await (await engine(w)).phone.run_once()
        parts = w.phone.bodies
        assert len(parts) == 3
        assert all(p is not None and len(p) <= 1600 for p in parts)
        assert " ".join(p or "" for p in parts) == f"Alice: {WORDS}"
        assert [a.text.media_urls for a in w.phone.accepted] == [
            ("https://example.org/a.png",), (), ()]
        assert (await now_of(w, delivery)).provider_id == w.phone.accepted[-1].sid

    async def test_the_sender_label_stays_with_the_first_part(self, w: World) -> None:
        unbroken = "x" * 2000  # no space to cut at: the label must not go alone
        await to_phone(w, unbroken)
        await (await engine(w)).phone.run_once()
        first, second = w.phone.bodies
        assert first is not None and first.startswith("Alice: x")
        assert len(first) <= 1600
        assert (first + (second or "")) == f"Alice: {unbroken}"

    async def test_a_retry_after_a_failed_part_does_not_resend_earlier_parts(
            self, w: World) -> None:
        delivery = await to_phone(w, WORDS)
        w.phone.script = [None, RetryableSendError("500")]
        process = await engine(w)
        await process.phone.run_once()
        assert len(w.phone.accepted) == 1
        later(w, 3600)
        await process.phone.run_once()
        assert len(w.phone.accepted) == 3
        assert len({a.text.body for a in w.phone.accepted}) == 3
        assert (await now_of(w, delivery)).provider_id == w.phone.accepted[-1].sid


class TestSenders:
    async def test_one_senders_pace_does_not_hold_up_another(self, tmp_path: Path) -> None:
        other_rule = rulebook(label="Alice: ")
        async with world("sqlite", tmp_path, clock=ManualClock(T0), rules=other_rule) as w:
            w.settings = replace(FAST, pacing=PacingSettings(default=5.0))
            phones = [PhoneNumber(f"+1415555010{n}") for n in range(3)]
            for n, phone in enumerate(phones):
                await to_phone(w, f"a{n}", phone=phone)
            later(w, 1)
            await (await engine(w)).phone.run_once()
            times = sorted(a.at for a in w.phone.accepted)
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert all(0.17 <= g <= 1.0 for g in gaps)  # loose top: a busy machine

    async def test_per_number_overrides_set_the_pace(self, w: World) -> None:
        w.settings = replace(FAST, pacing=PacingSettings(default=2.0,
                                                         rates={OUR_NUMBER: 20.0}))
        for n in range(4):
            await to_phone(w, f"a{n}", phone=PhoneNumber(f"+1415555010{n}"))
        started = asyncio.get_running_loop().time()
        await (await engine(w)).phone.run_once()
        assert len(w.phone.accepted) == 4
        assert asyncio.get_running_loop().time() - started < 1.0  # 2/s would take 1.5 s

    async def test_a_backlog_beyond_the_lease_is_handed_back_untried(self, w: World) -> None:
        # lease 24 s, send timeout 10 s: a sender holds 2 s of sends, i.e. 2 at 1/s
        w.settings = replace(FAST, lease=24.0, send_timeout=10.0,
                             pacing=PacingSettings(default=1.0))
        busy = [await to_phone(w, f"a{n}", phone=PhoneNumber(f"+1415555010{n}"))
                for n in range(5)]
        process = await engine(w)
        await process.phone.run_once()
        states = [await now_of(w, d) for d in busy]
        sent = [d for d in states if d.state is DeliveryState.SENT]
        waiting = [d for d in states if d.state is DeliveryState.PENDING]
        assert (len(sent), len(waiting)) == (2, 3)
        assert {d.attempts for d in waiting} == {0}  # waiting is no try
        assert all(d.next_attempt_at is not None and d.next_attempt_at > w.clock.now()
                   for d in waiting)


class TestRunning:
    async def test_stopping_hands_back_what_was_not_started(self, tmp_path: Path) -> None:
        async with world("sqlite", tmp_path) as w:
            w.settings = replace(FAST, pacing=PacingSettings(default=2.0))
            deliveries = [await to_phone(w, f"m{n}", phone=PhoneNumber(f"+1415555010{n}"))
                          for n in range(4)]
            await w.start()
            await asyncio.wait_for(w.phone.got_one.wait(), 2)
            await w.stop()
            states = [(await now_of(w, d)).state for d in deliveries]
            assert DeliveryState.SENT in states
            assert DeliveryState.PENDING in states
            assert DeliveryState.SENDING not in states
