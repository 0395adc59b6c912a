"""TwilioPhoneNetwork with the real twilio library against the simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.domain.ids import PhoneNumber
from gateway.domain.models import Channel
from gateway.domain.ports import OutboundText
from gateway.errors import (
    InvalidSignature,
    PermanentSendError,
    RetryableSendError,
    UnknownOutcomeError,
)
from gateway.testing.twilio_sim import Fault, TwilioSimulator
from gateway.twilio.sender import TwilioPhoneNetwork
from gateway.twilio.signature import verify_signature
from tests.ports import free_port

ACCOUNT = "AC" + "1" * 32
TOKEN = "sim-token"
PHONE = PhoneNumber("+14155550123")
OTHER_PHONE = PhoneNumber("+14155550124")
OUR_NUMBER = PhoneNumber("+12025550123")


class CallbackReceiver:
    """Records status callbacks, checking each signature the way the gateway does."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            verify_signature(TOKEN, self.url, form, request.headers.get("X-Twilio-Signature"))
        except InvalidSignature:
            return web.Response(status=403)
        self.received.append({k: str(v) for k, v in form.items()})
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[CallbackReceiver]:
    rec = CallbackReceiver()
    app = web.Application()
    app.router.add_post("/twilio/status", rec.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        rec.url = str(server.make_url("/twilio/status"))
        yield rec


@pytest.fixture
async def sim() -> AsyncIterator[TwilioSimulator]:
    async with TwilioSimulator(account_sid=ACCOUNT, auth_token=TOKEN,
                               callback_delay=0.01).running() as running:
        yield running


@pytest.fixture
async def phone(sim: TwilioSimulator) -> AsyncIterator[TwilioPhoneNetwork]:
    network = TwilioPhoneNetwork.create(account_sid=ACCOUNT, auth_token=TOKEN,
                                        api_base_url=sim.url, timeout=2.0, connect_timeout=1.0)
    yield network
    await network.close()


def text(body: str | None = "hello", *, to: PhoneNumber = PHONE,
         channel: Channel = Channel.SMS, **extra: object) -> OutboundText:
    return OutboundText(to=to, from_=OUR_NUMBER, channel=channel, body=body, **extra)


class TestSending:
    async def test_a_text_reaches_the_phone_and_returns_twilios_sid(
        self, sim: TwilioSimulator, phone: TwilioPhoneNetwork,
    ) -> None:
        sent = await phone.send(text("hello there"))
        assert sent.provider_id.startswith("SM")
        assert sent.status == "queued"
        [received] = sim.inbox(PHONE)
        assert (received.sid, received.body, received.from_, received.channel) == (
            sent.provider_id, "hello there", OUR_NUMBER, "sms")

    async def test_status_callbacks_are_signed_and_run_queued_sent_delivered(
        self, sim: TwilioSimulator, phone: TwilioPhoneNetwork, receiver: CallbackReceiver,
    ) -> None:
        sent = await phone.send(text(status_callback=receiver.url))
        await sim.settle()
        assert [r["MessageStatus"] for r in receiver.received] == ["queued", "sent", "delivered"]
        assert {r["MessageSid"] for r in receiver.received} == {sent.provider_id}
        assert all(c.status == 204 for c in sim.callbacks)

    async def test_whatsapp_sends_use_the_prefix_on_both_numbers(
        self, sim: TwilioSimulator, phone: TwilioPhoneNetwork,
    ) -> None:
        sent = await phone.send(text("hi", channel=Channel.WHATSAPP))
        message = sim.messages[sent.provider_id]
        assert (message.to, message.from_) == ("whatsapp:" + PHONE, "whatsapp:" + OUR_NUMBER)
        assert sim.inbox(PHONE)[0].channel == "whatsapp"

    async def test_a_template_goes_as_content_sid_and_json_variables(
        self, sim: TwilioSimulator, phone: TwilioPhoneNetwork,
    ) -> None:
        await phone.send(text(None, channel=Channel.WHATSAPP, content_sid="HX" + "2" * 32,
                              content_variables={"1": "Alice"}))
        [received] = sim.inbox(PHONE)
        assert received.content_sid == "HX" + "2" * 32
        assert received.content_variables == '{"1": "Alice"}'

    async def test_media_urls_are_sent_and_the_sid_is_opaque(
        self, sim: TwilioSimulator, phone: TwilioPhoneNetwork, aiohttp_server: Any,
    ) -> None:
        async def picture(request: web.Request) -> web.Response:
            return web.Response(body=b"\x89PNG", content_type="image/png")

        app = web.Application()
        app.router.add_get("/a.png", picture)
        url = str((await aiohttp_server(app, host="127.0.0.1")).make_url("/a.png"))
        sent = await phone.send(text("look", media_urls=(url,)))
        assert sent.provider_id.startswith("MM")
        [received] = await sim.wait_for_inbox(PHONE, 1, within=5.0)  # once Twilio fetched it
        assert received.media_urls == (url,)


class TestRetryableErrors:
    async def test_a_429_keeps_its_retry_after(
        self, sim: TwilioSimulator, phone: TwilioPhoneNetwork,
    ) -> None:
        sim.inject(Fault.rate_limited(retry_after=7))
        with pytest.raises(RetryableSendError) as info:
            await phone.send(text())
        assert info.value.retry_after == 7
        assert info.value.provider_code == 20429
        assert sim.inbox(PHONE) == []

    async def test_concurrent_429s_each_keep_their_own_retry_after(
        self, sim: TwilioSimulator, phone: TwilioPhoneNetwork,
    ) -> None:
        sim.inject(Fault.rate_limited(retry_after=3, to=PHONE))
        sim.inject(Fault.rate_limited(retry_after=9, to=OTHER_PHONE))
        results = await asyncio.gather(phone.send(text(to=PHONE)),
                                       phone.send(text(to=OTHER_PHONE)), return_exceptions=True)
        assert [getattr(r, "retry_after", None) for r in results] == [3, 9]

    async def test_a_500_is_retryable(
        self, sim: TwilioSimulator, phone: TwilioPhoneNetwork,
    ) -> None:
        sim.inject(Fault.server_error(status=500))
        with pytest.raises(RetryableSendError) as info:
            await phone.send(text())
        assert info.value.retry_after is None
        assert [a.outcome for a in sim.attempts] == ["500"]  # the library did not re-POST
        await phone.send(text())  # the fault was for one request only
        assert len(sim.inbox(PHONE)) == 1

    async def test_a_fault_injected_twice_applies_twice(
        self, sim: TwilioSimulator, phone: TwilioPhoneNetwork,
    ) -> None:
        fault = Fault.server_error(status=503)
        sim.inject(fault)
        sim.inject(fault)
        for _ in range(2):
            with pytest.raises(RetryableSendError):
                await phone.send(text())
        await phone.send(text())
        assert [a.outcome for a in sim.attempts] == ["503", "503", "created"]

    async def test_a_refused_connection_is_retryable(self) -> None:
        closed_port = free_port()  # nothing listens there
        network = TwilioPhoneNetwork.create(account_sid=ACCOUNT, auth_token=TOKEN,
                                            api_base_url=f"http://127.0.0.1:{closed_port}")
        try:
            with pytest.raises(RetryableSendError, match="could not reach"):
                await network.send(text())
        finally:
            await network.close()

    async def test_wrong_credentials_are_retryable_not_the_recipients_fault(
        self, sim: TwilioSimulator,
    ) -> None:
        network = TwilioPhoneNetwork.create(account_sid=ACCOUNT, auth_token="wrong",
                                            api_base_url=sim.url)
        try:
            with pytest.raises(RetryableSendError) as info:
                await network.send(text())
            assert info.value.provider_code == 20003
        finally:
            await network.close()


class TestPermanentErrors:
    @pytest.mark.parametrize("code", [21610, 21211, 21614, 63016])
    async def test_a_permanent_error_keeps_twilios_code(
        self, sim: TwilioSimulator, phone: TwilioPhoneNetwork, code: int,
    ) -> None:
        sim.inject(Fault.reject(code, to=PHONE))
        with pytest.raises(PermanentSendError) as info:
            await phone.send(text())
        assert info.value.provider_code == code
        await phone.send(text(to=OTHER_PHONE))  # other numbers are unaffected
        assert sim.inbox(PHONE) == []

    async def test_an_over_long_body_is_refused_by_twilio(
        self, phone: TwilioPhoneNetwork,
    ) -> None:
        with pytest.raises(PermanentSendError) as info:
            await phone.send(text("x" * 1601))
        assert info.value.provider_code == 21617


class TestUnknownOutcome:
    async def test_a_dropped_connection_after_the_request_left_is_unknown(
        self, sim: TwilioSimulator, phone: TwilioPhoneNetwork,
    ) -> None:
        before = datetime.now(UTC)
        sim.inject(Fault.drop(create=True))
        with pytest.raises(UnknownOutcomeError, match="ServerDisconnectedError"):
            await phone.send(text("did it go?"))
        found = await phone.find_sent(to=PHONE, from_=OUR_NUMBER, channel=Channel.SMS,
                                      sent_after=before, body="did it go?")
        assert found is not None
        assert found.provider_id == sim.inbox(PHONE)[0].sid

    async def test_a_timeout_is_unknown_and_the_message_may_exist(
        self, sim: TwilioSimulator,
    ) -> None:
        network = TwilioPhoneNetwork.create(account_sid=ACCOUNT, auth_token=TOKEN,
                                            api_base_url=sim.url, timeout=0.3)
        try:
            sim.inject(Fault.slow(0.8))
            with pytest.raises(UnknownOutcomeError, match="TimeoutError"):
                await network.send(text("slow"))
            await sim.wait_for_inbox(PHONE, 1, within=3)
            found = await network.find_sent(to=PHONE, from_=OUR_NUMBER, channel=Channel.SMS,
                                            sent_after=datetime.now(UTC) - timedelta(minutes=1),
                                            body="slow")
            assert found is not None
        finally:
            await network.close()

    async def test_a_success_status_without_json_is_unknown(
        self, sim: TwilioSimulator, phone: TwilioPhoneNetwork,
    ) -> None:
        sim.inject(Fault.garbled(create=True))
        with pytest.raises(UnknownOutcomeError, match="non-JSON"):
            await phone.send(text())


class TestFindSent:
    async def test_nothing_sent_is_not_found(self, phone: TwilioPhoneNetwork) -> None:
        assert await phone.find_sent(to=PHONE, from_=OUR_NUMBER, channel=Channel.SMS,
                                     sent_after=datetime.now(UTC) - timedelta(hours=1),
                                     body="hello") is None

    async def test_another_body_or_an_older_message_is_not_a_match(
        self, sim: TwilioSimulator, phone: TwilioPhoneNetwork,
    ) -> None:
        await phone.send(text("first"))
        assert await phone.find_sent(to=PHONE, from_=OUR_NUMBER, channel=Channel.SMS,
                                     sent_after=datetime.now(UTC) - timedelta(minutes=1),
                                     body="second") is None
        assert await phone.find_sent(to=PHONE, from_=OUR_NUMBER, channel=Channel.SMS,
                                     sent_after=datetime.now(UTC) + timedelta(seconds=2),
                                     body="first") is None

    async def test_sids_to_skip_are_passed_over_for_the_next_equal_text(
        self, phone: TwilioPhoneNetwork,
    ) -> None:
        since = datetime.now(UTC) - timedelta(minutes=1)
        first = await phone.send(text("ok"))
        second = await phone.send(text("ok"))
        lookup = {"to": PHONE, "from_": OUR_NUMBER, "channel": Channel.SMS,
                  "sent_after": since, "body": "ok"}
        found = await phone.find_sent(**lookup)
        assert found is not None and found.provider_id == first.provider_id
        found = await phone.find_sent(**lookup, skip={first.provider_id})
        assert found is not None and found.provider_id == second.provider_id
        assert await phone.find_sent(
            **lookup, skip={first.provider_id, second.provider_id}) is None

    async def test_a_queued_message_without_a_sent_date_is_found(
        self, sim: TwilioSimulator, phone: TwilioPhoneNetwork,
    ) -> None:
        sent = await phone.send(text("still queued"))
        sim.messages[sent.provider_id].date_sent = None  # Twilio has not sent it yet
        found = await phone.find_sent(to=PHONE, from_=OUR_NUMBER, channel=Channel.SMS,
                                      sent_after=datetime.now(UTC) - timedelta(minutes=1),
                                      body="still queued")
        assert found is not None and found.provider_id == sent.provider_id

    async def test_the_earliest_match_is_found_across_pages(
        self, sim: TwilioSimulator, phone: TwilioPhoneNetwork,
    ) -> None:
        start = datetime.now(UTC) - timedelta(seconds=1)
        first = await phone.send(text("same words"))
        for i in range(55):  # more than one page of 50, so the next-page link is followed
            await phone.send(text(f"filler {i}"))
        await phone.send(text("same words"))
        found = await phone.find_sent(to=PHONE, from_=OUR_NUMBER, channel=Channel.SMS,
                                      sent_after=start, body="same words")
        assert found is not None and found.provider_id == first.provider_id

    async def test_whatsapp_messages_are_looked_up_with_the_prefix(
        self, phone: TwilioPhoneNetwork,
    ) -> None:
        sent = await phone.send(text("wa", channel=Channel.WHATSAPP))
        since = datetime.now(UTC) - timedelta(minutes=1)
        found = await phone.find_sent(to=PHONE, from_=OUR_NUMBER, channel=Channel.WHATSAPP,
                                      sent_after=since, body="wa")
        assert found is not None and found.provider_id == sent.provider_id
        assert await phone.find_sent(to=PHONE, from_=OUR_NUMBER, channel=Channel.SMS,
                                     sent_after=since, body="wa") is None
