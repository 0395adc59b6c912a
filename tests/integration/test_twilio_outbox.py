"""The phone outbox end to end on the Twilio side: a real SQLite store, the real twilio
library, the simulator, and status callbacks applied through the store."""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy.engine import make_url

from gateway.domain.clock import SystemClock
from gateway.domain.ids import PhoneNumber, WalletAddress
from gateway.domain.models import Channel, Delivery, DeliveryJob, DeliveryState, MessageSource
from gateway.domain.policy import OutboundPolicy, WhatsAppTemplate
from gateway.domain.ports import NewMessage, NewParticipant
from gateway.errors import InvalidSignature
from gateway.store import SqlStore, open_store
from gateway.testing.twilio_sim import Fault, TwilioSimulator
from gateway.twilio.data import parse_status
from gateway.twilio.outbox import OutboxSettings, PhoneOutbox
from gateway.twilio.sender import TwilioPhoneNetwork
from gateway.twilio.signature import verify_signature

ACCOUNT = "AC" + "3" * 32
TOKEN = "outbox-token"
PHONE = PhoneNumber("+14155550123")
OTHER_PHONE = PhoneNumber("+14155550124")
OUR_NUMBER = PhoneNumber("+12025550123")
OTHER_NUMBER = PhoneNumber("+12025550199")
WALLET = WalletAddress("0x" + "Ab" * 20)
TEMPLATE = WhatsAppTemplate("HX" + "9" * 32, {"1": "a wallet"})

SETTINGS = OutboxSettings(rate_per_second=50.0, backoff_base=0.1, backoff_cap=0.2,
                          max_attempts=4, reconcile_settle=0.05, lease=30.0,
                          send_timeout=2.0, lease_margin=1.0)


@dataclass
class Gateway:
    """The Twilio half of a gateway: store, sender, outbox, and a status endpoint."""

    store: SqlStore
    sim: TwilioSimulator
    phone: TwilioPhoneNetwork
    status_url: str
    settings: OutboxSettings = SETTINGS
    failed: list[tuple[str, int | None, str]] = field(default_factory=list)
    callbacks: list[str] = field(default_factory=list)

    def outbox(self, settings: OutboxSettings | None = None) -> PhoneOutbox:
        return PhoneOutbox(
            self.store, self.phone, SystemClock(), settings or self.settings,
            status_callback_url=self.status_url,
            policy_for=lambda rule: OutboundPolicy(whatsapp_template=TEMPLATE),
            render=lambda job: job.message.body or "", on_failed=self.on_failed)

    async def on_failed(self, job: DeliveryJob, code: int | None, message: str) -> None:
        self.failed.append((job.delivery.id, code, message))

    async def status(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            verify_signature(TOKEN, self.status_url, form,
                             request.headers.get("X-Twilio-Signature"))
        except InvalidSignature:
            return web.Response(status=403)
        update = parse_status(form)
        self.callbacks.append(update.state.value)
        async with self.store.transaction() as tx:
            await tx.apply_status(update.message_sid, update.state,
                                  error_code=update.error_code,
                                  error_message=update.error_message, now=datetime.now(UTC))
        return web.Response(status=204)

    async def text_to_phone(
        self, body: str, *, phone: PhoneNumber = PHONE, proxy: PhoneNumber = OUR_NUMBER,
        channel: Channel = Channel.SMS, texted_in: timedelta | None = timedelta(0),
    ) -> Delivery:
        """A wallet's message in a conversation with ``phone``, and its delivery."""
        now = datetime.now(UTC)
        async with self.store.transaction() as tx:
            target = await tx.find_phone_participant(phone, proxy, channel)
            if target is None:
                conversation = await tx.create_conversation(rule="support", now=now)
                target = await tx.add_participant(NewParticipant(
                    conversation.id, channel, address=phone, proxy_address=proxy), now=now)
                await tx.add_participant(NewParticipant(
                    conversation.id, Channel.XMTP, identity=WALLET), now=now)
                if texted_in is not None:
                    await tx.record_inbound(phone, proxy, channel, now=now - texted_in)
            message = await tx.add_message(NewMessage(
                target.conversation_id, None, body, MessageSource.XMTP,
                external_id=secrets.token_hex(8)), now=now)
            return await tx.add_delivery(message.id, target.id, channel, now=now)

    async def delivery(self, delivery: Delivery) -> Delivery:
        async with self.store.transaction() as tx:
            found = await tx.get_delivery(delivery.id)
        assert found is not None
        return found


POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
KEYS = {"k1": secrets.token_bytes(32)}


async def _fresh_postgres() -> str:
    """A database of this suite's own, emptied: other suites share the server."""
    assert POSTGRES_URL is not None
    url = make_url(POSTGRES_URL)
    name = f"{url.database}_twilio_outbox"
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


@pytest.fixture
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite unless a test asks for PostgreSQL (indirect parametrisation)."""
    if getattr(request, "param", "sqlite") == "postgres":
        if not POSTGRES_URL:
            pytest.skip("GATEWAY_TEST_POSTGRES_URL is not set")
        return await _fresh_postgres()
    return f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}"


@pytest.fixture
async def gateway(store_url: str) -> AsyncIterator[Gateway]:
    store = await open_store(store_url, keys=KEYS, active_key="k1")
    app = web.Application()
    started: list[Gateway] = []

    async def status(request: web.Request) -> web.Response:
        return await started[0].status(request)

    app.router.add_post("/twilio/status", status)
    async with TwilioSimulator(account_sid=ACCOUNT, auth_token=TOKEN,
                               callback_delay=0.01).running() as sim, \
            TestServer(app, host="127.0.0.1") as server:
        phone = TwilioPhoneNetwork.create(account_sid=ACCOUNT, auth_token=TOKEN,
                                          api_base_url=sim.url, timeout=2.0)
        gw = Gateway(store, sim, phone, str(server.make_url("/twilio/status")))
        started.append(gw)
        try:
            yield gw
        finally:
            await sim.settle()
            await phone.close()
            await store.close()


class TestDelivering:
    async def test_a_text_is_sent_and_its_callbacks_carry_it_to_delivered(
        self, gateway: Gateway,
    ) -> None:
        delivery = await gateway.text_to_phone("hello from a wallet")
        assert await gateway.outbox().run_once() == 1
        [received] = gateway.sim.inbox(PHONE)
        assert (received.body, received.from_) == ("hello from a wallet", OUR_NUMBER)
        await gateway.sim.settle()
        stored = await gateway.delivery(delivery)
        assert stored.provider_id == received.sid
        assert stored.state is DeliveryState.DELIVERED
        assert gateway.callbacks == ["sent", "sent", "delivered"]  # queued maps to sent

    async def test_status_callbacks_that_beat_the_send_response_are_not_lost(
        self, gateway: Gateway,
    ) -> None:
        delivery = await gateway.text_to_phone("quick")
        gateway.sim.inject(Fault.early_callbacks())
        await gateway.outbox().run_once()
        assert gateway.callbacks == ["sent", "sent", "delivered"]
        assert (await gateway.delivery(delivery)).state is DeliveryState.DELIVERED

    async def test_callbacks_out_of_order_never_move_a_delivery_back(
        self, gateway: Gateway,
    ) -> None:
        delivery = await gateway.text_to_phone("out of order")
        gateway.sim.inject(Fault.reordered_callbacks())
        await gateway.outbox().run_once()
        await gateway.sim.settle()
        assert gateway.callbacks == ["delivered", "sent", "sent"]
        assert (await gateway.delivery(delivery)).state is DeliveryState.DELIVERED

    async def test_a_failed_delivery_callback_keeps_its_code(self, gateway: Gateway) -> None:
        delivery = await gateway.text_to_phone("to a dead phone")
        gateway.sim.inject(Fault.undelivered(30003))
        await gateway.outbox().run_once()
        await gateway.sim.settle()
        stored = await gateway.delivery(delivery)
        assert (stored.state, stored.error_code) == (DeliveryState.UNDELIVERED, 30003)
        assert gateway.sim.inbox(PHONE) == []


class TestRetries:
    async def test_a_429s_retry_after_is_honoured(self, gateway: Gateway) -> None:
        delivery = await gateway.text_to_phone("later please")
        gateway.sim.inject(Fault.rate_limited(retry_after=1))
        outbox = gateway.outbox()
        await outbox.run_once()
        stored = await gateway.delivery(delivery)
        assert stored.state is DeliveryState.PENDING
        assert stored.next_attempt_at is not None
        assert stored.next_attempt_at >= stored.updated_at + timedelta(seconds=1)
        assert await outbox.run_once() == 0  # not due yet
        await asyncio.sleep(1.05)
        assert await outbox.run_once() == 1
        first, second = gateway.sim.attempts
        assert (first.outcome, second.outcome) == ("429", "created")
        assert second.at - first.at >= 1.0
        assert len(gateway.sim.inbox(PHONE)) == 1

    async def test_a_500_is_retried_and_sent_once(self, gateway: Gateway) -> None:
        delivery = await gateway.text_to_phone("again")
        gateway.sim.inject(Fault.server_error(status=500, times=2))
        outbox = gateway.outbox()
        for _ in range(3):
            await outbox.run_once()
            await asyncio.sleep(0.25)  # beyond the test's backoff cap
        assert [a.outcome for a in gateway.sim.attempts] == ["500", "500", "created"]
        assert len(gateway.sim.inbox(PHONE)) == 1
        assert (await gateway.delivery(delivery)).attempts == 3

    @pytest.mark.parametrize("code", [21610, 21211, 21614])
    async def test_a_permanent_error_ends_the_delivery_with_its_code(
        self, gateway: Gateway, code: int,
    ) -> None:
        delivery = await gateway.text_to_phone("nope")
        gateway.sim.inject(Fault.reject(code, to=PHONE))
        await gateway.outbox().run_once()
        stored = await gateway.delivery(delivery)
        assert (stored.state, stored.error_code) == (DeliveryState.FAILED, code)
        assert gateway.failed[0][:2] == (delivery.id, code)
        assert len(gateway.sim.attempts) == 1


class TestUnknownOutcomes:
    async def test_a_dropped_connection_is_reconciled_without_a_second_send(
        self, gateway: Gateway,
    ) -> None:
        delivery = await gateway.text_to_phone("did it arrive?")
        gateway.sim.inject(Fault.drop(create=True))
        outbox = gateway.outbox()
        await outbox.run_once()
        assert (await gateway.delivery(delivery)).state is DeliveryState.UNKNOWN
        assert await outbox.reconcile_once() == 1
        stored = await gateway.delivery(delivery)
        [received] = gateway.sim.inbox(PHONE)
        assert stored.provider_id == received.sid
        assert stored.state.rank >= DeliveryState.SENT.rank
        await outbox.run_once()
        assert len(gateway.sim.attempts) == 1

    async def test_a_request_that_never_made_it_is_sent_again_after_the_lookup(
        self, gateway: Gateway,
    ) -> None:
        delivery = await gateway.text_to_phone("lost on the way")
        gateway.sim.inject(Fault.drop(create=False))
        outbox = gateway.outbox()
        await outbox.run_once()
        await outbox.reconcile_once()
        assert (await gateway.delivery(delivery)).state is DeliveryState.PENDING
        await outbox.run_once()
        assert len(gateway.sim.inbox(PHONE)) == 1
        assert (await gateway.delivery(delivery)).state.rank >= DeliveryState.SENT.rank

    @pytest.mark.parametrize("store_url", [
        "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
    async def test_a_repeated_text_is_not_taken_for_the_earlier_one(
        self, gateway: Gateway, store_url: str,
    ) -> None:
        first = await gateway.text_to_phone("ok")
        outbox = gateway.outbox()
        await outbox.run_once()
        second = await gateway.text_to_phone("ok")
        gateway.sim.inject(Fault.drop(create=False))  # the second "ok" never reached Twilio
        await outbox.run_once()
        await outbox.reconcile_once()
        assert (await gateway.delivery(second)).state is DeliveryState.PENDING
        await outbox.run_once()
        received = gateway.sim.inbox(PHONE)
        assert [r.body for r in received] == ["ok", "ok"]
        assert [(await gateway.delivery(d)).provider_id for d in (first, second)] == \
            [r.sid for r in received]

    async def test_a_worker_stopped_between_claim_and_send_resumes_without_a_duplicate(
        self, gateway: Gateway,
    ) -> None:
        delivery = await gateway.text_to_phone("interrupted")
        now = datetime.now(UTC)
        async with gateway.store.transaction() as tx:  # claimed, then the worker died
            [_claimed] = await tx.claim_deliveries([Channel.SMS], now=now,
                                              lease_until=now + timedelta(seconds=0.3), limit=5)
        outbox = gateway.outbox()
        assert await outbox.run_once() == 0  # leased: nobody else takes it
        await asyncio.sleep(0.35)
        assert await outbox.reconcile_once() == 1  # lease over: looked up, not found
        await outbox.run_once()
        assert [r.body for r in gateway.sim.inbox(PHONE)] == ["interrupted"]
        assert (await gateway.delivery(delivery)).state.rank >= DeliveryState.SENT.rank

    async def test_a_worker_stopped_mid_send_is_found_at_twilio_and_not_resent(
        self, gateway: Gateway,
    ) -> None:
        settings = OutboxSettings(rate_per_second=50.0, reconcile_settle=0.6, lease=1.5,
                                  send_timeout=0.5, lease_margin=0.2, poll_interval=30.0)
        delivery = await gateway.text_to_phone("mid-flight")
        gateway.sim.inject(Fault.slow(0.3))  # Twilio creates it even if we are gone
        running = asyncio.create_task(gateway.outbox(settings).run())
        await asyncio.wait_for(gateway.sim.create_arrived.wait(), 5)  # it is at Twilio
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert (await gateway.delivery(delivery)).state is DeliveryState.SENDING
        await asyncio.sleep(1.5)  # the dead worker's lease runs out
        successor = gateway.outbox(settings)
        assert await successor.reconcile_once() == 1
        await successor.run_once()
        [received] = gateway.sim.inbox(PHONE)
        assert (await gateway.delivery(delivery)).provider_id == received.sid
        assert [a.outcome for a in gateway.sim.attempts] == ["slow"]


class TestPacingAndShape:
    async def test_each_sender_is_paced_on_its_own(self, gateway: Gateway) -> None:
        settings = OutboxSettings(rate_per_second=4.0, reconcile_settle=0.0)
        for i in range(4):
            await gateway.text_to_phone(f"a{i}", proxy=OUR_NUMBER)
        for i in range(2):
            await gateway.text_to_phone(f"b{i}", phone=OTHER_PHONE, proxy=OTHER_NUMBER)
        await gateway.outbox(settings).run_once()
        by_sender: dict[str, list[float]] = {}
        for attempt in gateway.sim.attempts:
            by_sender.setdefault(attempt.from_, []).append(attempt.at)
        a, b = by_sender[OUR_NUMBER], by_sender[OTHER_NUMBER]
        assert len(a) == 4 and len(b) == 2
        gaps = [y - x for x, y in itertools.pairwise(a)]
        assert all(0.2 <= g <= 1.5 for g in gaps), gaps  # loose top: a busy machine
        assert b[0] < a[1]  # the other number did not wait behind the first one's queue
        assert b[1] - b[0] >= 0.2

    async def test_a_1601_character_text_arrives_as_two_messages_in_order(
        self, gateway: Gateway,
    ) -> None:
        body = " ".join(["word"] * 320) + " end"  # 1,603 characters
        delivery = await gateway.text_to_phone(body)
        await gateway.outbox().run_once()
        received = gateway.sim.inbox(PHONE)
        assert len(received) == 2
        assert all(len(r.body) <= 1600 for r in received)
        assert " ".join(r.body for r in received) == body
        assert (await gateway.delivery(delivery)).provider_id == received[-1].sid

    async def test_whatsapp_inside_the_window_goes_as_text_with_the_prefix(
        self, gateway: Gateway,
    ) -> None:
        await gateway.text_to_phone("hi on whatsapp", channel=Channel.WHATSAPP,
                                    texted_in=timedelta(hours=1))
        await gateway.outbox().run_once()
        [received] = gateway.sim.inbox(PHONE)
        assert (received.channel, received.body, received.content_sid) == (
            "whatsapp", "hi on whatsapp", None)
        message = gateway.sim.messages[received.sid]
        assert (message.to, message.from_) == ("whatsapp:" + PHONE, "whatsapp:" + OUR_NUMBER)

    async def test_whatsapp_outside_the_window_sends_only_the_template(
        self, gateway: Gateway,
    ) -> None:
        await gateway.text_to_phone("free text", channel=Channel.WHATSAPP,
                                    texted_in=timedelta(hours=25))
        await gateway.outbox().run_once()
        [received] = gateway.sim.inbox(PHONE)
        assert received.content_sid == TEMPLATE.content_sid
        assert received.content_variables == '{"1": "a wallet"}'
        assert received.body == ""


class TestSeveralWorkers:
    @pytest.mark.parametrize("store_url", [
        "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
    async def test_two_workers_on_one_outbox_send_each_text_once(
        self, gateway: Gateway, store_url: str,
    ) -> None:
        second_store = await open_store(store_url, keys=KEYS, active_key="k1")
        try:
            senders = [(PHONE, OUR_NUMBER), (OTHER_PHONE, OTHER_NUMBER)]
            deliveries = [await gateway.text_to_phone(f"text {i}", phone=phone, proxy=proxy)
                          for i in range(12) for phone, proxy in senders]
            settings = OutboxSettings(rate_per_second=200.0, batch_size=5,
                                      reconcile_settle=0.0)
            first = gateway.outbox(settings)
            other = PhoneOutbox(
                second_store, gateway.phone, SystemClock(), settings,
                status_callback_url=gateway.status_url,
                policy_for=lambda rule: OutboundPolicy(), render=lambda job: job.message.body
                or "", on_failed=gateway.on_failed)
            claimed_by = [0, 0]
            for _ in range(10):
                claimed = await asyncio.gather(first.run_once(), other.run_once())
                claimed_by = [a + b for a, b in zip(claimed_by, claimed, strict=True)]
                if sum(claimed) == 0:
                    break
            assert all(claimed_by), claimed_by  # both workers took a share
            bodies = [r.body for phone, _ in senders for r in gateway.sim.inbox(phone)]
            assert sorted(bodies) == sorted(f"text {i}" for i in range(12) for _ in senders)
            assert len(gateway.sim.attempts) == len(deliveries)
            for delivery in deliveries:
                assert (await gateway.delivery(delivery)).state.rank >= DeliveryState.SENT.rank
        finally:
            await second_store.close()
