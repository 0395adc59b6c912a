"""The Twilio simulator as clients see it: the real twilio library on its REST resource,
signed webhooks to a receiver, the HTTP control API, and the ``gateway twilio-sim``
command."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from gateway.domain.models import Channel, Media
from gateway.errors import InvalidSignature
from gateway.testing.twilio_sim import Fault, TwilioSimulator
from gateway.twilio.data import InboundText, parse_inbound
from gateway.twilio.http import GatewayHttpClient
from gateway.twilio.signature import verify_signature
from tests.ports import free_port

ACCOUNT = "AC" + "5" * 32
TOKEN = "sim-test-token"
PHONE = "+14155550123"
OTHER_PHONE = "+14155550124"
OUR_NUMBER = "+12025550123"


class Webhook:
    """A gateway stand-in: checks each inbound webhook's signature and parses it."""

    def __init__(self) -> None:
        self.url = ""
        self.texts: list[InboundText] = []
        self.refused = 0

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            verify_signature(TOKEN, self.url, form, request.headers.get("X-Twilio-Signature"))
        except InvalidSignature:
            self.refused += 1
            return web.Response(status=403)
        self.texts.append(parse_inbound(form))
        return web.Response(text="<Response/>", content_type="text/xml")


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    hook = Webhook()
    app = web.Application()
    app.router.add_post("/twilio/messages", hook.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        hook.url = str(server.make_url("/twilio/messages"))
        yield hook


@pytest.fixture
async def sim(webhook: Webhook) -> AsyncIterator[TwilioSimulator]:
    async with TwilioSimulator(account_sid=ACCOUNT, auth_token=TOKEN, webhook_url=webhook.url,
                               callback_delay=0.01).running() as running:
        yield running


@pytest.fixture
async def client(sim: TwilioSimulator) -> AsyncIterator[Client]:
    http = GatewayHttpClient(timeout=2.0, base_url=sim.url)
    yield Client(ACCOUNT, TOKEN, http_client=http)
    await http.close()


async def send(client: Client, body: str = "hi", to: str = PHONE, **extra: object) -> str:
    message = await client.messages.create_async(to=to, from_=OUR_NUMBER, body=body, **extra)
    return str(message.sid)


class TestMessagesResource:
    async def test_create_answers_twilios_message_shape(
        self, sim: TwilioSimulator, client: Client,
    ) -> None:
        message = await client.messages.create_async(to=PHONE, from_=OUR_NUMBER, body="hello")
        assert message.sid.startswith("SM") and len(message.sid) == 34
        assert (message.to, message.from_, message.body) == (PHONE, OUR_NUMBER, "hello")
        assert message.status == "queued"
        assert message.direction == "outbound-api"
        assert message.account_sid == ACCOUNT
        assert message.date_created is not None and message.date_created.tzinfo is not None
        assert message.date_sent is None

    async def test_fetch_follows_the_status_forward(
        self, sim: TwilioSimulator, client: Client,
    ) -> None:
        sid = await send(client)
        await sim.settle()
        fetched = await client.messages(sid).fetch_async()
        assert fetched.status == "delivered"
        assert fetched.date_sent is not None

    async def test_fetching_an_unknown_sid_is_twilios_404(self, client: Client) -> None:
        with pytest.raises(TwilioRestException) as info:
            await client.messages("SM" + "0" * 32).fetch_async()
        assert (info.value.status, info.value.code) == (404, 20404)

    async def test_list_filters_by_to_and_from(self, sim: TwilioSimulator, client: Client) -> None:
        await send(client, "one", to=PHONE)
        await send(client, "two", to=OTHER_PHONE)
        listed = await client.messages.list_async(to=OTHER_PHONE, from_=OUR_NUMBER)
        assert [m.body for m in listed] == ["two"]
        assert await client.messages.list_async(from_="+12025550100") == []

    async def test_list_filters_by_date_sent(self, sim: TwilioSimulator, client: Client) -> None:
        old = await send(client, "old")
        new = await send(client, "new")
        queued = await send(client, "queued")
        await sim.settle()
        sim.messages[old].date_sent = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
        sim.messages[new].date_sent = datetime(2026, 1, 3, 10, 0, tzinfo=UTC)
        sim.messages[queued].date_sent = None
        after = await client.messages.list_async(date_sent_after=datetime(2026, 1, 2, tzinfo=UTC))
        before = await client.messages.list_async(date_sent_before="2026-01-01")
        on_day = await client.messages.list_async(date_sent="2026-01-03")
        assert [m.body for m in after] == ["new"]
        assert [m.body for m in before] == ["old"]
        assert [m.body for m in on_day] == ["new"]

    async def test_list_pages_newest_first_through_next_page_links(
        self, client: Client,
    ) -> None:
        for i in range(120):
            await send(client, f"m{i:03d}")
        listed = await client.messages.list_async(page_size=50)
        assert [m.body for m in listed] == [f"m{i:03d}" for i in reversed(range(120))]
        page = await client.messages.page_async(page_size=50)
        assert page.next_page_url is not None and "PageToken=" in page.next_page_url

    async def test_wrong_credentials_are_refused_with_20003(self, sim: TwilioSimulator) -> None:
        http = GatewayHttpClient(timeout=2.0, base_url=sim.url)
        try:
            for account, token in ((ACCOUNT, "wrong"), ("AC" + "6" * 32, TOKEN)):
                with pytest.raises(TwilioRestException) as info:
                    await Client(account, token, http_client=http).messages.create_async(
                        to=PHONE, from_=OUR_NUMBER, body="x")
                assert (info.value.status, info.value.code) == (401, 20003)
        finally:
            await http.close()

    @pytest.mark.parametrize(("params", "code"), [
        ({"to": PHONE}, 21602),
        ({"to": PHONE, "body": "x" * 1601}, 21617),
        ({"to": "whatsapp:" + PHONE, "body": "x"}, 21910),
        ({"to": "12345", "body": "x"}, 21211),
    ])
    async def test_invalid_creates_get_twilios_codes(
        self, client: Client, params: dict[str, str], code: int,
    ) -> None:
        with pytest.raises(TwilioRestException) as info:
            await client.messages.create_async(from_=OUR_NUMBER, **params)
        assert (info.value.status, info.value.code) == (400, code)


class TestStatusCallbacks:
    async def test_a_chosen_failure_ends_the_callbacks_with_its_code(
        self, sim: TwilioSimulator, client: Client,
    ) -> None:
        sim.inject(Fault.undelivered(30005, final="failed"))
        sid = await send(client, status_callback="http://127.0.0.1:9/unreachable")
        await sim.settle()
        assert [c.form["MessageStatus"] for c in sim.callbacks] == ["queued", "failed"]
        assert sim.callbacks[-1].form["ErrorCode"] == "30005"
        assert all(c.status is None for c in sim.callbacks)  # nobody listening: recorded
        assert sim.messages[sid].error_code == 30005
        assert sim.inbox(PHONE) == []


class TestWhatsAppWindow:
    async def test_free_text_outside_the_window_fails_with_63016_and_templates_go(
        self, webhook: Webhook,
    ) -> None:
        async with TwilioSimulator(account_sid=ACCOUNT, auth_token=TOKEN,
                                   webhook_url=webhook.url, callback_delay=0.01,
                                   whatsapp_window=True).running() as sim:
            http = GatewayHttpClient(timeout=2.0, base_url=sim.url)
            client = Client(ACCOUNT, TOKEN, http_client=http)
            wa_phone, wa_us = "whatsapp:" + PHONE, "whatsapp:" + OUR_NUMBER
            try:
                closed = await client.messages.create_async(to=wa_phone, from_=wa_us,
                                                            body="free text")
                template = await client.messages.create_async(
                    to=wa_phone, from_=wa_us, content_sid="HX" + "1" * 32)
                await sim.text_from_phone(PHONE, OUR_NUMBER, "hi", channel="whatsapp")
                opened = await client.messages.create_async(to=wa_phone, from_=wa_us,
                                                            body="now it is open")
                await sim.settle()
            finally:
                await http.close()
            assert closed.status == "queued"  # accepted first, failed afterwards
            assert (sim.messages[closed.sid].status, sim.messages[closed.sid].error_code) == (
                "failed", 63016)
            assert [r.sid for r in sim.inbox(PHONE)] == [template.sid, opened.sid]


class TestTextsFromPhones:
    async def test_a_text_from_a_phone_is_a_signed_twilio_webhook(
        self, sim: TwilioSimulator, webhook: Webhook,
    ) -> None:
        result = await sim.text_from_phone(PHONE, OUR_NUMBER, "hello gateway")
        assert result.status == 200
        [text] = webhook.texts
        assert (text.message_sid, text.account_sid, text.from_, text.to, text.body,
                text.channel) == (result.sid, ACCOUNT, PHONE, OUR_NUMBER, "hello gateway",
                                  Channel.SMS)

    async def test_whatsapp_texts_and_media_carry_their_fields(
        self, sim: TwilioSimulator, webhook: Webhook,
    ) -> None:
        result = await sim.text_from_phone(PHONE, OUR_NUMBER, "", channel="whatsapp",
                                           media=[("https://example.org/p.jpg", "image/jpeg")])
        [text] = webhook.texts
        assert result.sid.startswith("MM")
        assert text.channel is Channel.WHATSAPP
        assert text.media == (Media("https://example.org/p.jpg", "image/jpeg"),)

    async def test_an_unsigned_text_is_refused_by_the_receiver(
        self, sim: TwilioSimulator, webhook: Webhook,
    ) -> None:
        result = await sim.text_from_phone(PHONE, OUR_NUMBER, "hi", signed=False)
        assert (result.status, webhook.refused, webhook.texts) == (403, 1, [])


class TestControlApi:
    async def test_texts_inbox_and_faults_over_http(
        self, sim: TwilioSimulator, client: Client, webhook: Webhook,
    ) -> None:
        async with aiohttp.ClientSession(base_url=sim.url) as http:
            async with http.post("/_sim/texts", json={"from": PHONE, "to": OUR_NUMBER,
                                                      "body": "over http"}) as r:
                assert r.status == 200
                assert (await r.json())["status"] == 200
            assert webhook.texts[0].body == "over http"

            async with http.post("/_sim/faults", json={"kind": "rate_limited",
                                                       "retry_after": 4}) as r:
                assert r.status == 201
            with pytest.raises(TwilioRestException) as info:
                await send(client)
            assert info.value.status == 429

            async with http.post("/_sim/faults", json={"kind": "reject", "code": 21610,
                                                       "to": PHONE}) as r:
                assert r.status == 201
            async with http.delete("/_sim/faults") as r:
                assert r.status == 204
            async with http.post("/_sim/faults", json={"kind": "explode"}) as r:
                assert r.status == 400

            later = asyncio.get_running_loop().call_later(
                0.2, lambda: asyncio.ensure_future(send(client, "awaited")))
            try:
                async with http.get("/_sim/inbox", params={"phone": PHONE, "count": "1",
                                                           "timeout": "3"}) as r:
                    inbox = await r.json()
            finally:
                later.cancel()
            assert inbox["complete"] is True
            assert [m["body"] for m in inbox["messages"]] == ["awaited"]

            async with http.get("/_sim/inbox", params={"phone": OTHER_PHONE, "count": "1",
                                                       "timeout": "0.2"}) as r:
                assert (await r.json())["complete"] is False

            await send(client, "and another")
            async with http.get("/_sim/inbox", params={"phone": PHONE, "count": "2",
                                                       "since": "1"}) as r:
                later_only = await r.json()
            assert later_only["total"] == 2 and later_only["complete"] is True
            assert [m["body"] for m in later_only["messages"]] == ["and another"]

            async with http.get("/_sim/attempts") as r:
                assert [a["outcome"] for a in await r.json()] == ["429", "created", "created"]


class TestCommand:
    async def test_gateway_twilio_sim_serves_until_terminated(self) -> None:
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "twilio-sim", "--port", str(port),
            "--auth-token", TOKEN, "--account-sid", ACCOUNT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.getcwd()})
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 20)
            assert f"127.0.0.1:{port}" in line.decode()
            http = GatewayHttpClient(timeout=2.0, base_url=f"http://127.0.0.1:{port}")
            try:
                await Client(ACCOUNT, TOKEN, http_client=http).messages.create_async(
                    to=PHONE, from_=OUR_NUMBER, body="from afar")
            finally:
                await http.close()
            async with aiohttp.ClientSession() as session, session.get(
                    f"http://127.0.0.1:{port}/_sim/inbox", params={"phone": PHONE}) as r:
                assert [m["body"] for m in (await r.json())["messages"]] == ["from afar"]
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0


def test_faults_are_consumed_per_request() -> None:
    fault = Fault.server_error(times=2, to=PHONE)
    assert fault.matches(PHONE) and fault.matches("whatsapp:" + PHONE)
    assert not fault.matches(OTHER_PHONE)
    assert Fault.from_json({"kind": "slow", "delay": 0.5}).delay == 0.5
    with pytest.raises(ValueError, match="unknown fault fields"):
        Fault.from_json({"kind": "slow", "sleep": 1})
