"""Media across the bridge, step by step, with real parts on 127.0.0.1: the Twilio
simulator (real twilio library), the gateway's media route and local blob store, the
untrusted-URL fetcher."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import xmtp_bindings as xb
from aiohttp import web
from aiohttp.test_utils import TestServer
from twilio.rest import Client

from gateway.appkeys import CLOCK, CONFIG
from gateway.config import GatewayConfig, parse_config
from gateway.domain.clock import SystemClock
from gateway.domain.models import Media
from gateway.errors import AttachmentInvalid, MediaRefused
from gateway.media.attachments import (
    ATTACHMENT_CONTENT_TYPE,
    REMOTE_ATTACHMENT_CONTENT_TYPE,
    Attachment,
    decode_remote_attachment,
    encode_attachment,
    encode_remote_attachment,
    encrypt_attachment,
)
from gateway.media.fetch import MediaFetcher
from gateway.media.local_store import LocalBlobStore
from gateway.media.transfer import (
    MediaLimits,
    attachment_content,
    attachment_from_xmtp,
    download_attachment,
    fetch_phone_media,
    filename_for,
    publish_for_phone,
    upload_attachment,
)
from gateway.media.wiring import (
    BLOB_STORE,
    MEDIA_FETCHER,
    fetch_policy,
    install_media,
    media_limits,
    phone_media_credentials,
)
from gateway.testing.twilio_sim import TwilioSimulator
from gateway.twilio.http import GatewayHttpClient
from tests.unit.config_fixtures import ACCOUNT_SID, AUTH_TOKEN, minimal

PHONE = "+14155550123"
OUR_NUMBER = "+15550100001"
PICTURE = b"\xff\xd8\xff\xe0" + secrets.token_bytes(20_000)


@dataclass
class Gateway:
    config: GatewayConfig
    app: web.Application
    url: str

    @property
    def store(self) -> LocalBlobStore:
        store = self.app[BLOB_STORE]
        assert isinstance(store, LocalBlobStore)
        return store

    @property
    def fetcher(self) -> MediaFetcher:
        return self.app[MEDIA_FETCHER]

    @property
    def limits(self) -> MediaLimits:
        return media_limits(self.config.media)


def config_for(tmp_path: Path, port: int, **media: object) -> GatewayConfig:
    raw = minimal()
    raw["data_dir"] = str(tmp_path / "data")
    raw["server"] = {"port": port, "public_url": f"http://127.0.0.1:{port}"}
    raw["media"] = {"allow_insecure_urls": True, **media}
    return parse_config(raw, base_dir=tmp_path, persist_secrets=False)


@pytest.fixture
async def gateway(tmp_path: Path, unused_tcp_port: int) -> AsyncIterator[Gateway]:
    """An app with only the media parts installed, as ``create_app`` would add them."""
    config = config_for(tmp_path, unused_tcp_port)
    app = web.Application()
    app[CONFIG] = config
    app[CLOCK] = SystemClock()
    install_media(app)
    async with TestServer(app, host="127.0.0.1", port=unused_tcp_port) as server:
        yield Gateway(config, app, str(server.make_url("")).rstrip("/"))


@pytest.fixture
async def sim() -> AsyncIterator[TwilioSimulator]:
    async with TwilioSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                               webhook_url="http://127.0.0.1:9/unused",
                               callback_delay=0.01).running() as running:
        yield running


class TestInstalledMedia:
    async def test_the_local_store_is_served_under_the_public_url(self, gateway: Gateway) -> None:
        await gateway.store.put("in/x", PICTURE, "image/jpeg")
        url = await gateway.store.url("in/x", ttl=timedelta(minutes=1))
        assert url.startswith(gateway.config.server.public_url + "/media/in/x?")
        got = await gateway.fetcher.fetch(url)
        assert (got.data, got.content_type) == (PICTURE, "image/jpeg")

    def test_the_fetch_policy_follows_the_config(self, tmp_path: Path) -> None:
        secure = fetch_policy(config_for(tmp_path, 8080, allow_insecure_urls=False).media)
        assert (secure.allow_insecure, secure.max_bytes, secure.timeout_seconds) == (
            False, 5_000_000, 30.0)

    def test_twilio_credentials_cover_the_simulator_when_there_is_one(
            self, tmp_path: Path) -> None:
        config = config_for(tmp_path, 8080)
        creds = phone_media_credentials(config, "http://127.0.0.1:8788")
        assert creds is not None and creds.username == ACCOUNT_SID
        assert "http://127.0.0.1:8788" in creds.scopes and "api.twilio.com" in creds.scopes


class TestPhoneToWallet:
    async def test_an_mms_picture_becomes_an_attachment_a_wallet_can_open(
            self, gateway: Gateway, sim: TwilioSimulator) -> None:
        await sim.text_from_phone(PHONE, OUR_NUMBER, "look",
                                  attachments=[(PICTURE, "image/jpeg")],
                                  webhook_url=gateway.url + "/nowhere")
        [hosted] = sim.media.items.values()
        media = [Media(sim.url + hosted.uri, "image/jpeg")]
        creds = phone_media_credentials(gateway.config, sim.url)
        [fetched] = await fetch_phone_media(gateway.fetcher, media, credentials=creds,
                                            limits=gateway.limits)
        attachment = Attachment(filename_for(fetched.content_type), fetched.content_type,
                                fetched.data)
        assert attachment.filename == "media-1.jpg"
        content = await attachment_content(gateway.store, attachment, ttl=timedelta(hours=1))
        remote = decode_remote_attachment(content)
        assert remote.url.startswith(gateway.url + "/media/xmtp/")
        # what a wallet does with it: fetch the URL as a stranger's, check and decrypt
        assert await download_attachment(gateway.fetcher, remote) == attachment
        stored = await gateway.store.get(remote.url.split("/media/")[1].split("?")[0])
        assert PICTURE not in stored.data  # the store holds only ciphertext

    async def test_a_small_file_goes_inline(self, gateway: Gateway) -> None:
        small = Attachment("a.txt", "text/plain", b"hi")
        content = await attachment_content(gateway.store, small, ttl=timedelta(hours=1),
                                           inline_max_bytes=1000)
        assert await attachment_from_xmtp(ATTACHMENT_CONTENT_TYPE, content, gateway.fetcher,
                                          limits=MediaLimits(10, 10, 1, ("text/*",))) == small

    @pytest.mark.parametrize(("limits", "why"), [
        (MediaLimits(100, 100_000, 10, ("image/*",)), "over the 100-byte cap"),
        (MediaLimits(30_000, 30_000, 10, ("image/*",)), "over the 9996-byte cap"),  # 30000 - 20004
        (MediaLimits(30_000, 100_000, 1, ("image/*",)), "at most 1 per message"),
        (MediaLimits(30_000, 100_000, 10, ("video/*",)), "image/jpeg is not allowed"),
    ])
    async def test_the_limits_are_kept_per_item_and_per_message(
            self, gateway: Gateway, sim: TwilioSimulator, limits: MediaLimits, why: str) -> None:
        await sim.text_from_phone(PHONE, OUR_NUMBER, "", attachments=[
            (PICTURE, "image/jpeg"), (PICTURE[:10_000], "image/jpeg")],
            webhook_url=gateway.url + "/nowhere")
        media = [Media(sim.url + m.uri) for m in sim.media.items.values()]
        with pytest.raises(MediaRefused, match=why):
            await fetch_phone_media(gateway.fetcher, media, limits=limits,
                                    credentials=phone_media_credentials(gateway.config, sim.url))


class TestWalletToPhone:
    async def test_a_remote_attachment_reaches_the_phone_through_twilio(
            self, gateway: Gateway, sim: TwilioSimulator) -> None:
        """The wallet's file is fetched from its (untrusted) URL, decrypted, kept in the
        store and given to Twilio as a MediaUrl on the gateway; the simulator fetches
        it from there as Twilio would, and the phone gets the same bytes."""
        sent = Attachment("cat.jpg", "image/jpeg", PICTURE)
        sealed = encrypt_attachment(sent)
        await gateway.store.put("wallet/upload", sealed.payload, "application/octet-stream")
        remote = sealed.remote(await gateway.store.url("wallet/upload", ttl=timedelta(hours=1)))
        got = await attachment_from_xmtp(REMOTE_ATTACHMENT_CONTENT_TYPE,
                                         encode_remote_attachment(remote), gateway.fetcher,
                                         limits=gateway.limits)
        assert got == sent
        published = await publish_for_phone(gateway.store, got, ttl=timedelta(hours=1))
        http = GatewayHttpClient(timeout=5.0, base_url=sim.url)
        try:
            message = await Client(ACCOUNT_SID, AUTH_TOKEN, http_client=http).messages \
                .create_async(to=PHONE, from_=OUR_NUMBER, media_url=[published.url])
        finally:
            await http.close()
        assert message.sid.startswith("MM")
        [received] = await sim.wait_for_inbox(PHONE, 1, within=5.0)
        assert [(m.content_type, m.data) for m in received.media] == [("image/jpeg", PICTURE)]

    async def test_a_text_is_not_taken_for_a_file(self, gateway: Gateway) -> None:
        with pytest.raises(AttachmentInvalid):
            await attachment_from_xmtp("xmtp.org/text:1.0", xb.encode_text("hi"),
                                       gateway.fetcher, limits=gateway.limits)

    async def test_an_inline_file_over_the_cap_or_of_a_refused_type_is_refused(
            self, gateway: Gateway) -> None:
        big = encode_attachment(Attachment("a.jpg", "image/jpeg", PICTURE))
        with pytest.raises(MediaRefused, match="cap"):
            await attachment_from_xmtp(ATTACHMENT_CONTENT_TYPE, big, gateway.fetcher,
                                       limits=MediaLimits(1000, 1000, 1, ("image/*",)))
        page = encode_attachment(Attachment("a.html", "text/html", b"<script>"))
        with pytest.raises(MediaRefused, match="text/html is not allowed"):
            await attachment_from_xmtp(ATTACHMENT_CONTENT_TYPE, page, gateway.fetcher,
                                       limits=gateway.limits)

    async def test_a_remote_file_over_the_cap_is_cut_off_while_it_downloads(
            self, gateway: Gateway) -> None:
        remote = await upload_attachment(gateway.store, Attachment("a.jpg", "image/jpeg",
                                                                   PICTURE),
                                         ttl=timedelta(hours=1))
        with pytest.raises(MediaRefused, match="cap"):
            await attachment_from_xmtp(REMOTE_ATTACHMENT_CONTENT_TYPE,
                                       encode_remote_attachment(remote), gateway.fetcher,
                                       limits=MediaLimits(1000, 1000, 1, ("image/*",)))
