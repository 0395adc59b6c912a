from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from gateway.domain.clock import ManualClock
from gateway.domain.models import Channel, Consent, DeliveryJob, DeliveryState, Media
from gateway.domain.policy import (
    REFUSED_NEVER_TEXTED_IN,
    REFUSED_OPTED_OUT,
    REFUSED_PHONE_QUOTA,
    REFUSED_RULE_QUOTA,
    REFUSED_WHATSAPP_WINDOW,
    OutboundPolicy,
    WhatsAppTemplate,
)
from gateway.errors import (
    PermanentSendError,
    RetryableSendError,
    StoreError,
    UnknownOutcomeError,
)
from gateway.twilio.outbox import OutboxSettings, PhoneOutbox
from tests.unit.twilio.outbox_fakes import (
    OTHER_NUMBER,
    OTHER_PHONE,
    OUR_NUMBER,
    PHONE,
    T0,
    FakePhone,
    FakeStore,
    later,
    make_job,
)

CALLBACK = "https://gateway.example/twilio/status"
FAST = OutboxSettings(rate_per_second=1000.0, burst=1, reconcile_settle=0.0,
                      backoff_base=2.0, max_attempts=3, poll_interval=0.05,
                      reconcile_interval=0.05)


class World:
    def __init__(self, settings: OutboxSettings = FAST,
                 policies: dict[str | None, OutboundPolicy] | None = None) -> None:
        self.clock = ManualClock(T0)
        self.store = FakeStore(self.clock)
        self.phone = FakePhone(self.clock)
        self.failed: list[tuple[str, int | None, str]] = []
        self.observed: list[tuple[str, float]] = []
        self.policies = policies or {}
        self.outbox = PhoneOutbox(
            self.store, self.phone, self.clock, settings, status_callback_url=CALLBACK,
            policy_for=lambda rule: self.policies.get(rule, OutboundPolicy()),
            render=lambda job: f"Alice: {job.message.body}",
            on_failed=self.on_failed, observer=lambda s, t: self.observed.append((s, t)))

    async def on_failed(self, job: DeliveryJob, code: int | None, message: str) -> None:
        self.failed.append((job.delivery.id, code, message))

    def job(self, **kwargs: Any) -> DeliveryJob:
        return self.store.add(make_job(**kwargs))


@pytest.fixture
def world() -> World:
    w = World()
    w.store.texted_in(PHONE, OUR_NUMBER)
    return w


class TestSendingADelivery:
    async def test_the_rendered_text_goes_from_our_number_with_the_status_callback(
        self, world: World,
    ) -> None:
        job = world.job(body="hi")
        assert await world.outbox.run_once() == 1
        [text] = world.phone.attempts
        assert (text.to, text.from_, text.channel, text.body, text.status_callback) == (
            PHONE, OUR_NUMBER, Channel.SMS, "Alice: hi", CALLBACK)
        assert world.store.state(job).state is DeliveryState.SENT
        assert world.store.state(job).provider_id == world.phone.accepted[0].sid
        assert [s for s, _ in world.observed] == ["sent"]

    async def test_media_goes_with_the_text(self, world: World) -> None:
        world.job(media=[Media("https://example.org/a.png", "image/png")])
        await world.outbox.run_once()
        assert world.phone.attempts[0].media_urls == ("https://example.org/a.png",)

    async def test_nothing_due_sends_nothing(self, world: World) -> None:
        world.job(created_at=T0 + timedelta(minutes=1))
        world.store.rows[next(iter(world.store.rows))].update(
            next_attempt_at=T0 + timedelta(minutes=1))
        assert await world.outbox.run_once() == 0
        assert world.phone.attempts == []

    async def test_an_empty_text_without_media_is_failed_not_sent(self, world: World) -> None:
        world.outbox._render = lambda job: ""  # type: ignore[method-assign]
        job = world.job()
        await world.outbox.run_once()
        assert world.phone.attempts == []
        assert world.store.state(job).state is DeliveryState.FAILED
        assert world.failed == [(job.delivery.id, None, "nothing to send to a phone")]


    async def test_a_participant_without_a_proxy_number_is_failed_not_retried(
        self, world: World,
    ) -> None:
        job = world.job(from_=None)  # type: ignore[arg-type]
        await world.outbox.run_once()
        assert world.phone.attempts == []
        assert world.store.state(job).state is DeliveryState.FAILED
        assert world.failed[0][2] == "the participant has no phone number or proxy number"


class TestPolicy:
    async def test_a_phone_that_never_texted_in_is_not_texted(self) -> None:
        world = World()
        job = world.job()
        await world.outbox.run_once()
        assert world.phone.attempts == []
        assert world.store.state(job).error_code == REFUSED_NEVER_TEXTED_IN
        assert world.failed[0][:2] == (job.delivery.id, REFUSED_NEVER_TEXTED_IN)
        assert [s for s, _ in world.observed] == ["refused"]

    async def test_a_rule_may_allow_unsolicited_texts(self) -> None:
        world = World(policies={"outreach": OutboundPolicy(allow_unsolicited=True)})
        world.job(rule="outreach")
        await world.outbox.run_once()
        assert len(world.phone.accepted) == 1

    async def test_a_phone_that_said_stop_is_not_texted(self, world: World) -> None:
        world.store.texted_in(PHONE, OUR_NUMBER, consent=Consent.DENIED)
        job = world.job()
        await world.outbox.run_once()
        assert world.phone.attempts == []
        assert world.store.state(job).error_code == REFUSED_OPTED_OUT

    async def test_the_daily_phone_quota_counts_only_earlier_deliveries(self) -> None:
        world = World(policies={"support": OutboundPolicy(per_phone_daily=2)})
        world.store.texted_in(PHONE, OUR_NUMBER)
        jobs = [world.job(body=f"m{i}", created_at=T0 + timedelta(seconds=i)) for i in range(3)]
        later(world.clock, 10)
        await world.outbox.run_once()
        assert world.phone.bodies == ["Alice: m0", "Alice: m1"]
        assert world.store.state(jobs[2]).error_code == REFUSED_PHONE_QUOTA

    async def test_deliveries_older_than_a_day_do_not_count(self) -> None:
        world = World(policies={"support": OutboundPolicy(per_phone_daily=1)})
        world.store.texted_in(PHONE, OUR_NUMBER)
        world.job(body="old", created_at=T0)
        world.store.rows[next(iter(world.store.rows))].update(state=DeliveryState.SENT)
        later(world.clock, 25 * 3600)
        world.job(body="new", created_at=world.clock.now())
        await world.outbox.run_once()
        assert world.phone.bodies == ["Alice: new"]

    async def test_the_daily_phone_quota_counts_only_the_rules_own_texts(self) -> None:
        world = World(policies={"support": OutboundPolicy(per_phone_daily=1)})
        world.store.texted_in(PHONE, OUR_NUMBER)
        world.store.texted_in(PHONE, OTHER_NUMBER)
        world.job(body="from sales", rule="sales", from_=OTHER_NUMBER, created_at=T0)
        world.job(body="from support", created_at=T0 + timedelta(seconds=1))
        later(world.clock, 5)
        await world.outbox.run_once()
        assert sorted(world.phone.bodies) == ["Alice: from sales", "Alice: from support"]

    async def test_the_daily_rule_quota_spans_phones(self) -> None:
        world = World(policies={"support": OutboundPolicy(per_rule_daily=1)})
        world.store.texted_in(PHONE, OUR_NUMBER)
        world.store.texted_in(OTHER_PHONE, OUR_NUMBER)
        world.job(to=PHONE, created_at=T0)
        second = world.job(to=OTHER_PHONE, created_at=T0 + timedelta(seconds=1))
        later(world.clock, 5)
        await world.outbox.run_once()
        assert len(world.phone.accepted) == 1
        assert world.store.state(second).error_code == REFUSED_RULE_QUOTA


class TestWhatsAppWindow:
    async def test_texting_in_by_sms_opens_nothing_on_whatsapp(self) -> None:
        world = World()
        world.store.texted_in(PHONE, OUR_NUMBER, channels=[Channel.SMS])
        job = world.job(channel=Channel.WHATSAPP)
        await world.outbox.run_once()
        assert world.phone.attempts == []
        assert world.store.state(job).error_code == REFUSED_NEVER_TEXTED_IN

    async def test_inside_the_window_the_text_goes_as_is(self, world: World) -> None:
        later(world.clock, 3600)
        world.job(channel=Channel.WHATSAPP)
        await world.outbox.run_once()
        text = world.phone.attempts[0]
        assert (text.channel, text.body, text.content_sid) == (
            Channel.WHATSAPP, "Alice: hello", None)

    async def test_outside_the_window_only_the_rules_template_goes(self) -> None:
        template = WhatsAppTemplate("HX" + "1" * 32, {"1": "Alice"})
        world = World(policies={"support": OutboundPolicy(whatsapp_template=template)})
        world.store.texted_in(PHONE, OUR_NUMBER)
        later(world.clock, 25 * 3600)
        world.job(channel=Channel.WHATSAPP, created_at=world.clock.now())
        await world.outbox.run_once()
        text = world.phone.attempts[0]
        assert (text.body, text.content_sid, text.content_variables) == (
            None, template.content_sid, {"1": "Alice"})

    async def test_outside_the_window_without_a_template_nothing_goes(
        self, world: World,
    ) -> None:
        later(world.clock, 25 * 3600)
        job = world.job(channel=Channel.WHATSAPP, created_at=world.clock.now())
        await world.outbox.run_once()
        assert world.phone.attempts == []
        assert world.failed[0][:2] == (job.delivery.id, REFUSED_WHATSAPP_WINDOW)


class TestSendErrors:
    async def test_a_retryable_error_waits_at_least_retry_after(self, world: World) -> None:
        job = world.job()
        world.phone.script = [RetryableSendError("429", retry_after=30, provider_code=20429)]
        await world.outbox.run_once()
        [(_, retry)] = world.store.calls("mark_retry")
        assert retry["next_attempt_at"] >= T0 + timedelta(seconds=30)
        assert retry["error_code"] == 20429
        assert world.store.state(job).state is DeliveryState.PENDING
        assert world.failed == []

    async def test_backoff_grows_exponentially_with_full_jitter(self) -> None:
        delays = []
        for attempts in (1, 2, 3):
            world = World(OutboxSettings(backoff_base=2.0, max_attempts=10, rate_per_second=1e3))
            world.store.texted_in()
            job = world.job()
            world.store.rows[job.delivery.id].update(attempts=attempts - 1)
            world.phone.script = [RetryableSendError("500")] * 1
            for _ in range(20):
                world.store.rows[job.delivery.id].update(state=DeliveryState.PENDING,
                                                         next_attempt_at=T0,
                                                         attempts=attempts - 1)
                world.phone.script = [RetryableSendError("500")]
                await world.outbox.run_once()
            delays.append([(kw["next_attempt_at"] - T0).total_seconds()
                           for _, kw in world.store.calls("mark_retry")])
        for attempts, seen in zip((1, 2, 3), delays, strict=True):
            ceiling = 2.0 * 2 ** (attempts - 1)
            assert all(0 <= d <= ceiling for d in seen)
            assert len(set(seen)) > 1  # jittered, not fixed
        assert max(delays[2]) > max(delays[0])

    async def test_after_max_attempts_the_delivery_fails_with_the_code_kept(
        self, world: World,
    ) -> None:
        job = world.job()
        for _ in range(3):
            world.phone.script = [RetryableSendError("busy", provider_code=20429)]
            later(world.clock, 3600)
            await world.outbox.run_once()
        assert world.store.state(job).state is DeliveryState.FAILED
        assert world.store.state(job).error_code == 20429
        assert len(world.store.calls("mark_retry")) == 2
        assert world.failed[0][1] == 20429

    async def test_a_permanent_error_ends_the_delivery_and_tells_the_author(
        self, world: World,
    ) -> None:
        job = world.job()
        world.phone.script = [PermanentSendError("unsubscribed", provider_code=21610)]
        await world.outbox.run_once()
        assert world.store.state(job).state is DeliveryState.FAILED
        assert world.store.state(job).error_code == 21610
        assert world.failed == [(job.delivery.id, 21610, "unsubscribed")]

    async def test_a_429_pauses_the_whole_sender(self) -> None:
        world = World(OutboxSettings(rate_per_second=1000.0, reconcile_settle=0.0))
        world.store.texted_in()
        world.job(body="a")
        world.job(body="b")
        world.phone.script = [RetryableSendError("429", retry_after=0.3)]
        loop = asyncio.get_running_loop()
        started = loop.time()
        await world.outbox.run_once()
        assert world.phone.accepted[0].text.body == "Alice: b"
        assert world.phone.accepted[0].at - started >= 0.25


    async def test_a_send_that_would_outlast_its_lease_is_handed_back_not_slept_on(
        self,
    ) -> None:
        world = World(OutboxSettings(rate_per_second=10.0, lease=10.0, send_timeout=2.0,
                                     lease_margin=1.0, max_attempts=5))
        world.store.texted_in()
        first = world.job(body="a", created_at=T0)
        second = world.job(body="b", created_at=T0 + timedelta(seconds=1))
        later(world.clock, 2)
        world.phone.script = [RetryableSendError("429", retry_after=20, provider_code=20429)]
        async with asyncio.timeout(2):  # a 20 s pause must not be slept inside the lease
            await world.outbox.run_once()
        assert len(world.phone.attempts) == 1
        handed_back = dict(world.store.calls("hand_back"))
        assert handed_back[second.delivery.id]["next_attempt_at"] >= world.clock.now() + \
            timedelta(seconds=19)
        untried = world.store.state(second)
        assert (untried.error_code, untried.attempts) == (None, 0)  # it never tried
        assert world.store.state(first).error_code == 20429
        assert [s for s, _ in world.observed] == ["retry"]


class TestUnknownOutcome:
    async def test_an_unknown_outcome_is_marked_and_never_resent_blindly(
        self, world: World,
    ) -> None:
        job = world.job()
        world.phone.script = [UnknownOutcomeError("timeout")]
        await world.outbox.run_once()
        assert world.store.state(job).state is DeliveryState.UNKNOWN
        later(world.clock, 3600)
        await world.outbox.run_once()
        assert len(world.phone.attempts) == 1

    async def test_reconcile_finds_a_message_that_went_out_and_marks_it_sent(
        self, world: World,
    ) -> None:
        job = world.job()
        world.phone.script = [UnknownOutcomeError("dropped")]
        await world.outbox.run_once()
        sid = world.phone.accept_silently(world.phone.attempts[0])  # it did reach Twilio
        assert await world.outbox.reconcile_once() == 1
        assert world.store.state(job).state is DeliveryState.SENT
        assert world.store.state(job).provider_id == sid
        assert world.phone.lookups[0]["body"] == "Alice: hello"
        assert world.phone.lookups[0]["sent_after"] <= job.delivery.created_at
        await world.outbox.run_once()
        assert len(world.phone.attempts) == 1

    async def test_reconcile_does_not_take_an_earlier_identical_text_for_this_one(
        self, world: World,
    ) -> None:
        first, second = world.job(body="ok"), world.job(body="ok")
        world.phone.script = [None, UnknownOutcomeError("timeout")]
        await world.outbox.run_once()
        [earlier] = world.phone.accepted
        assert world.store.state(first).provider_id == earlier.sid
        await world.outbox.reconcile_once()
        assert world.phone.lookups[0]["skip"] == {earlier.sid}
        assert world.store.state(second).state is DeliveryState.PENDING
        await world.outbox.run_once()
        assert world.phone.bodies == ["Alice: ok", "Alice: ok"]
        assert world.store.state(second).provider_id == world.phone.accepted[1].sid

    async def test_reconcile_sends_again_only_what_did_not_go_out(self, world: World) -> None:
        job = world.job()
        world.phone.script = [UnknownOutcomeError("timeout")]
        await world.outbox.run_once()
        await world.outbox.reconcile_once()
        assert world.store.state(job).state is DeliveryState.PENDING
        await world.outbox.run_once()
        assert world.store.state(job).state is DeliveryState.SENT
        assert len(world.phone.accepted) == 1

    async def test_unknown_outcomes_end_after_max_attempts_when_nothing_went_out(
        self, world: World,
    ) -> None:
        job = world.job()
        for _ in range(FAST.max_attempts):
            world.phone.script = [UnknownOutcomeError("timeout")]
            await world.outbox.run_once()
            await world.outbox.reconcile_once()
        assert len(world.phone.attempts) == FAST.max_attempts
        assert world.store.state(job).state is DeliveryState.FAILED
        assert world.failed[0][0] == job.delivery.id
        await world.outbox.run_once()
        assert len(world.phone.attempts) == FAST.max_attempts

    async def test_a_failed_lookup_leaves_it_unknown(self, world: World) -> None:
        job = world.job()
        world.phone.script = [UnknownOutcomeError("timeout")]
        await world.outbox.run_once()

        async def broken(**kwargs: Any) -> None:
            raise RetryableSendError("list failed")

        world.phone.find_sent = broken  # type: ignore[method-assign, assignment]
        await world.outbox.reconcile_once()
        assert world.store.state(job).state is DeliveryState.UNKNOWN

    async def test_a_worker_that_died_after_claiming_is_reconciled_after_its_lease(
        self, world: World,
    ) -> None:
        job = world.job()
        async with world.store.transaction() as tx:  # a worker claims, then dies
            await tx.claim_deliveries([Channel.SMS], now=T0, lease_until=T0
                                      + timedelta(seconds=120), limit=10)
        assert await world.outbox.reconcile_once() == 0  # still leased
        later(world.clock, 121)
        assert await world.outbox.reconcile_once() == 1
        await world.outbox.run_once()
        assert len(world.phone.accepted) == 1
        assert world.store.state(job).state is DeliveryState.SENT


class TestLateResults:
    async def test_a_worker_past_its_lease_does_not_overwrite_the_rows_new_owner(
        self, world: World,
    ) -> None:
        job = world.job()
        world.phone.delay = 0.2  # the first worker stalls in its send...
        # sends pop their outcome as they end: the second worker's ends first
        world.phone.script = [None, PermanentSendError("refused late", provider_code=21610)]
        stalled = asyncio.create_task(world.outbox.run_once())
        for _ in range(100):
            if world.phone.attempts:
                break
            await asyncio.sleep(0.01)
        later(world.clock, FAST.lease + 1)  # ...until its lease has run out
        world.phone.delay = 0.0
        other = PhoneOutbox(  # another process on the same outbox
            world.store, world.phone, world.clock, FAST, status_callback_url=CALLBACK,
            policy_for=lambda rule: OutboundPolicy(), render=lambda job: job.message.body or "",
            on_failed=world.on_failed)
        assert await other.reconcile_once() == 1  # taken over: not found, pending again
        assert await other.run_once() == 1  # and sent by the other worker
        await stalled
        state = world.store.state(job)
        assert (state.state, state.provider_id) == (DeliveryState.SENT, world.phone.accepted[0].sid)
        assert [method for method, _, _ in world.store.dropped] == ["mark_failed"]
        assert world.failed == [], "the wallet is not told of a failure that was not final"
        assert "late" in [outcome for outcome, _ in world.observed]


class TestLongBodies:
    async def test_a_long_body_goes_in_parts_and_the_last_sid_is_kept(
        self, world: World,
    ) -> None:
        words = " ".join(f"word{i:04d}" for i in range(400))  # 3,599 characters
        job = world.job(body=words, media=[Media("https://example.org/a.png")])
        await world.outbox.run_once()
        parts = world.phone.bodies
        assert len(parts) == 3
        assert all(p is not None and len(p) <= 1600 for p in parts)
        assert " ".join(p or "" for p in parts) == f"Alice: {words}"
        assert [a.text.media_urls for a in world.phone.accepted] == [
            ("https://example.org/a.png",), (), ()]
        assert world.store.state(job).provider_id == world.phone.accepted[-1].sid

    async def test_a_retry_after_a_failed_part_does_not_resend_earlier_parts(
        self, world: World,
    ) -> None:
        words = " ".join(f"word{i:04d}" for i in range(400))
        job = world.job(body=words)
        world.phone.script = [None, RetryableSendError("500")]
        await world.outbox.run_once()
        assert len(world.phone.accepted) == 1
        later(world.clock, 3600)
        await world.outbox.run_once()
        assert len(world.phone.accepted) == 3
        assert len({a.text.body for a in world.phone.accepted}) == 3
        assert world.store.state(job).provider_id == world.phone.accepted[-1].sid


class TestSenders:
    async def test_one_senders_pace_does_not_hold_up_another(self) -> None:
        world = World(OutboxSettings(rate_per_second=5.0, reconcile_settle=0.0))
        world.store.texted_in(PHONE, OUR_NUMBER)
        world.store.texted_in(PHONE, OTHER_NUMBER)
        for i in range(3):
            world.job(body=f"a{i}", from_=OUR_NUMBER, created_at=T0 + timedelta(seconds=i))
        world.job(body="b", from_=OTHER_NUMBER, created_at=T0 + timedelta(seconds=9))
        later(world.clock, 10)
        await world.outbox.run_once()
        times = {a.text.body: a.at for a in world.phone.accepted}
        gaps = [times["Alice: a1"] - times["Alice: a0"], times["Alice: a2"] - times["Alice: a1"]]
        assert all(0.17 <= g <= 1.0 for g in gaps)  # loose top: a busy machine
        assert times["Alice: b"] < times["Alice: a1"]

    async def test_per_number_overrides_set_the_pace(self) -> None:
        world = World(OutboxSettings(rate_per_second=2.0, reconcile_settle=0.0,
                                     rate_overrides={OUR_NUMBER: 20.0}))
        world.store.texted_in()
        for i in range(4):
            world.job(body=f"a{i}", created_at=T0 + timedelta(seconds=i))
        later(world.clock, 10)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await world.outbox.run_once()
        assert loop.time() - started < 1.0  # 2/s would take 1.5 s

    async def test_a_backlog_beyond_the_lease_is_handed_back_spread_at_the_senders_pace(
        self,
    ) -> None:
        # lease 24 s, send timeout 10 s: a lane holds 2 s of sends, i.e. 2 at 1/s
        world = World(OutboxSettings(rate_per_second=1.0, lease=24.0, send_timeout=10.0))
        world.store.texted_in(PHONE, OUR_NUMBER)
        world.store.texted_in(PHONE, OTHER_NUMBER)
        busy = [world.job(body=f"a{i}", created_at=T0) for i in range(5)]
        other = world.job(body="b", from_=OTHER_NUMBER, created_at=T0)
        world.phone.delay = 0.0
        claimed = await world.outbox._claim()
        assert claimed == 6
        handed_back = world.store.calls("hand_back")
        assert [d for d, _ in handed_back] == [j.delivery.id for j in busy[2:]]
        assert {world.store.state(j).attempts for j in busy[2:]} == {0}  # waiting is no try
        dues = [kw["next_attempt_at"] for _, kw in handed_back]
        assert dues == sorted(dues) and len(set(dues)) == 3
        assert dues[0] >= T0 + timedelta(seconds=2)
        assert other.delivery.id not in {d for d, _ in handed_back}
        await world.outbox.drain()


class TestRunning:
    async def test_wake_claims_at_once_instead_of_at_the_next_poll(self) -> None:
        world = World(OutboxSettings(rate_per_second=1e3, poll_interval=30.0,
                                     reconcile_interval=30.0, reconcile_settle=0.0))
        world.store.texted_in()
        task = asyncio.create_task(world.outbox.run())
        try:
            await asyncio.sleep(0.05)
            world.job()
            world.outbox.wake()
            await asyncio.wait_for(world.phone.got_one.wait(), 2)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    async def test_a_store_error_on_one_delivery_does_not_stop_the_lane(
        self, world: World,
    ) -> None:
        first = world.job(body="one")
        second = world.job(body="two")
        world.store.fail_next_write = StoreError("database went away")
        await world.outbox.run_once()
        assert world.store.state(first).state is DeliveryState.SENDING  # left to the lease
        assert world.store.state(second).state is DeliveryState.SENT
        assert ("error", 0.0) in world.observed

    async def test_stopping_hands_back_what_was_not_started(self) -> None:
        world = World(OutboxSettings(rate_per_second=2.0, poll_interval=30.0,
                                     reconcile_interval=30.0, reconcile_settle=0.0))
        world.store.texted_in()
        jobs = [world.job(body=f"m{i}") for i in range(4)]
        task = asyncio.create_task(world.outbox.run())
        await asyncio.wait_for(world.phone.got_one.wait(), 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        states = [world.store.state(j).state for j in jobs]
        assert states[0] is DeliveryState.SENT
        assert DeliveryState.PENDING in states
        assert DeliveryState.SENDING not in states[2:]
