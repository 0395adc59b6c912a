"""Media in the Twilio simulator, through the real twilio library: what a phone sends is
hosted behind Twilio's URLs and basic auth; MediaUrls of a send are fetched as Twilio
would, and a URL that cannot be used fails the message with Twilio's code."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from gateway.errors import MediaFetchFailed
from gateway.media.fetch import FetchPolicy, MediaFetcher, twilio_credentials
from gateway.testing.twilio_sim import TwilioSimulator
from gateway.twilio.http import GatewayHttpClient
from gateway.twilio.signature import verify_signature

ACCOUNT = "AC" + "7" * 32
TOKEN = "sim-media-token"
PHONE = "+14155550123"
OUR_NUMBER = "+12025550123"
PICTURE = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(4000)
LOCAL = FetchPolicy(max_bytes=6_000_000, allow_insecure=True)


class Webhook:
    def __init__(self) -> None:
        self.url = ""
        self.forms: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        verify_signature(TOKEN, self.url, form, request.headers.get("X-Twilio-Signature"))
        self.forms.append({k: str(v) for k, v in form.items()})
        return web.Response(text="<Response/>", content_type="text/xml")


class Files:
    """A web server of files that sends are given as MediaUrl."""

    def __init__(self) -> None:
        self.url = ""
        self.files: dict[str, tuple[int, str, bytes]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        status, kind, body = self.files.get(request.path, (404, "text/plain", b"no"))
        return web.Response(status=status, body=body, headers={"Content-Type": kind})

    def add(self, path: str, body: bytes, kind: str = "image/png", status: int = 200) -> str:
        self.files[path] = (status, kind, body)
        return self.url + path


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    hook = Webhook()
    app = web.Application()
    app.router.add_post("/twilio/messages", hook.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        hook.url = str(server.make_url("/twilio/messages"))
        yield hook


@pytest.fixture
async def files() -> AsyncIterator[Files]:
    served = Files()
    app = web.Application()
    app.router.add_get("/{tail:.*}", served.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        served.url = str(server.make_url("")).rstrip("/")
        yield served


@pytest.fixture
async def sim(webhook: Webhook) -> AsyncIterator[TwilioSimulator]:
    async with TwilioSimulator(account_sid=ACCOUNT, auth_token=TOKEN, webhook_url=webhook.url,
                               callback_delay=0.01).running() as running:
        yield running


@pytest.fixture
async def client(sim: TwilioSimulator) -> AsyncIterator[Client]:
    http = GatewayHttpClient(timeout=5.0, base_url=sim.url)
    yield Client(ACCOUNT, TOKEN, http_client=http)
    await http.close()


class TestMediaFromPhones:
    async def test_a_phones_picture_is_hosted_and_named_in_the_signed_webhook(
            self, sim: TwilioSimulator, webhook: Webhook, client: Client) -> None:
        result = await sim.text_from_phone(PHONE, OUR_NUMBER, "look",
                                           attachments=[(PICTURE, "image/png"),
                                                        (b"BEGIN:VCARD", "text/vcard")])
        [form] = webhook.forms
        assert result.sid.startswith("MM") and form["MessageSid"] == result.sid
        assert form["NumMedia"] == "2"
        assert form["MediaContentType0"] == "image/png"
        assert form["MediaContentType1"] == "text/vcard"
        assert form["MediaUrl0"].startswith(
            f"{sim.url}/2010-04-01/Accounts/{ACCOUNT}/Messages/{result.sid}/Media/ME")
        listed = await client.messages(result.sid).media.list_async()
        assert sorted(m.content_type for m in listed) == ["image/png", "text/vcard"]
        one = await client.messages(result.sid).media(listed[0].sid).fetch_async()
        assert one.parent_sid == result.sid

    async def test_its_url_needs_the_account_credentials_then_redirects_to_the_bytes(
            self, sim: TwilioSimulator, webhook: Webhook) -> None:
        await sim.text_from_phone(PHONE, OUR_NUMBER, "", attachments=[(PICTURE, "image/png")])
        url = webhook.forms[0]["MediaUrl0"]
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            assert response.status == 401
        creds = twilio_credentials(ACCOUNT, TOKEN, extra_origins=(sim.url,))
        async with MediaFetcher(LOCAL) as fetcher:
            got = await fetcher.fetch(url, credentials=creds)
            assert (got.data, got.content_type) == (PICTURE, "image/png")
            assert "/_sim/cdn/" in got.url
            with pytest.raises(MediaFetchFailed) as refused:
                await fetcher.fetch(url, credentials=twilio_credentials(ACCOUNT, TOKEN))
        assert refused.value.status == 401

    async def test_without_enforced_auth_the_url_is_open(self, webhook: Webhook) -> None:
        async with TwilioSimulator(account_sid=ACCOUNT, auth_token=TOKEN,
                                   webhook_url=webhook.url, media_auth=False).running() as sim:
            await sim.text_from_phone(PHONE, OUR_NUMBER, "", attachments=[(PICTURE, "image/png")])
            async with MediaFetcher(LOCAL) as fetcher:
                got = await fetcher.fetch(webhook.forms[0]["MediaUrl0"])
        assert got.data == PICTURE

    async def test_attachments_come_through_the_control_api_too(
            self, sim: TwilioSimulator, webhook: Webhook) -> None:
        body = {"from": PHONE, "to": OUR_NUMBER, "body": "",
                "attachments": [{"data_base64": base64.b64encode(PICTURE).decode(),
                                 "content_type": "image/png"}]}
        async with aiohttp.ClientSession() as http, \
                http.post(sim.url + "/_sim/texts", json=body) as response:
            assert response.status == 200
        assert webhook.forms[0]["NumMedia"] == "1"


    async def test_a_file_may_be_hosted_alone_for_a_webhook_posted_elsewhere(
            self, sim: TwilioSimulator) -> None:
        body = {"data_base64": base64.b64encode(PICTURE).decode(), "content_type": "image/png"}
        async with aiohttp.ClientSession() as http, \
                http.post(sim.url + "/_sim/media", json=body) as response:
            assert response.status == 201
            hosted = await response.json()
        creds = twilio_credentials(ACCOUNT, TOKEN, extra_origins=(sim.url,))
        async with MediaFetcher(LOCAL) as fetcher:
            got = await fetcher.fetch(hosted["url"], credentials=creds)
        assert (got.data, got.content_type) == (PICTURE, "image/png")
        assert sim.inbox(PHONE) == [] and sim.newest_first() == []


class TestMediaOfSends:
    async def test_media_urls_are_fetched_and_the_phone_gets_the_files(
            self, sim: TwilioSimulator, client: Client, files: Files) -> None:
        urls = [files.add("/a.png", PICTURE), files.add("/b.pdf", b"%PDF-1.7", "application/pdf")]
        message = await client.messages.create_async(to=PHONE, from_=OUR_NUMBER, body="see",
                                                     media_url=urls)
        assert message.sid.startswith("MM") and message.num_media == "2"
        [received] = await sim.wait_for_inbox(PHONE, 1, within=5.0)
        assert [(m.content_type, m.data, m.source_url) for m in received.media] == [
            ("image/png", PICTURE, urls[0]), ("application/pdf", b"%PDF-1.7", urls[1])]
        await sim.settle()
        assert (await client.messages(message.sid).fetch_async()).status == "delivered"
        listed = await client.messages(message.sid).media.list_async()
        assert sorted(m.content_type for m in listed) == ["application/pdf", "image/png"]

    async def test_the_inbox_gives_the_files_sizes_without_their_bytes_when_asked(
            self, sim: TwilioSimulator, client: Client, files: Files) -> None:
        url = files.add("/a.png", PICTURE)
        await client.messages.create_async(to=PHONE, from_=OUR_NUMBER, body="see",
                                           media_url=[url])
        await sim.wait_for_inbox(PHONE, 1, within=5.0)
        async with aiohttp.ClientSession() as http:
            params = {"phone": PHONE, "count": "1", "data": "0"}
            async with http.get(sim.url + "/_sim/inbox", params=params) as response:
                [text] = (await response.json())["messages"]
        [media] = text["media"]
        assert media["size"] == len(PICTURE) and "data_base64" not in media

    async def test_a_text_only_send_keeps_its_sm_sid(self, client: Client) -> None:
        message = await client.messages.create_async(to=PHONE, from_=OUR_NUMBER, body="hi")
        assert message.sid.startswith("SM") and message.num_media == "0"

    @pytest.mark.parametrize(("path", "kind", "body", "status", "code"), [
        ("/gone.png", "image/png", b"", 404, 11200),
        ("/oops.png", "image/png", b"", 500, 11200),
        ("/page.html", "text/html", b"<html>", 200, 12300),
        ("/huge.mp4", "video/mp4", b"\0" * (5 * 1024 * 1024 + 1), 200, 30019),
    ])
    async def test_media_that_cannot_be_used_fails_the_message_with_twilios_code(
            self, sim: TwilioSimulator, client: Client, files: Files, path: str, kind: str,
            body: bytes, status: int, code: int) -> None:
        url = files.add(path, body, kind, status)
        message = await client.messages.create_async(to=PHONE, from_=OUR_NUMBER,
                                                     media_url=[url])
        assert message.status == "queued"
        await sim.settle()
        fetched = await client.messages(message.sid).fetch_async()
        assert (fetched.status, fetched.error_code) == ("failed", code)
        assert sim.inbox(PHONE) == []
        assert await client.messages(message.sid).media.list_async() == []

    async def test_an_unreachable_media_url_fails_with_11200(
            self, sim: TwilioSimulator, client: Client) -> None:
        message = await client.messages.create_async(
            to=PHONE, from_=OUR_NUMBER, media_url=["http://127.0.0.1:9/nothing.png"])
        await sim.settle()
        fetched = await client.messages(message.sid).fetch_async()
        assert (fetched.status, fetched.error_code) == ("failed", 11200)

    async def test_urls_off_this_machine_are_never_fetched(
            self, sim: TwilioSimulator, client: Client) -> None:
        message = await client.messages.create_async(
            to=PHONE, from_=OUR_NUMBER, media_url=["https://example.org/a.png"])
        await sim.settle()
        fetched = await client.messages(message.sid).fetch_async()
        assert (fetched.status, fetched.error_code) == ("failed", 11200)

    @pytest.mark.parametrize(("urls", "code"), [
        ([f"https://example.org/{i}.png" for i in range(11)], 21623),
        (["ftp://example.org/a.png"], 21620),
    ])
    async def test_what_twilio_refuses_at_once_is_refused_at_once(
            self, sim: TwilioSimulator, client: Client, urls: list[str], code: int) -> None:
        with pytest.raises(TwilioRestException) as info:
            await client.messages.create_async(to=PHONE, from_=OUR_NUMBER, body="x",
                                               media_url=urls)
        assert (info.value.status, info.value.code) == (400, code)
        assert sim.messages == {}
