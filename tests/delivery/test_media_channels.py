"""Files through the outbox: a phone's MMS posted into the group as attachments by the
chat channel (after its text, each keyed, fetched after the record), a wallet's
attachments sent to the phone as MMS by the phone channel, and what a process killed
in the middle leaves: the file arrives once. Real store (SQLite, and PostgreSQL when
GATEWAY_TEST_POSTGRES_URL is set), real blob store and fetcher, a file server on
127.0.0.1 standing in for Twilio's media and a wallet's remote attachments."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from gateway.domain.models import Channel, DeliveryState, Media, MessageSource
from gateway.media.attachments import (
    Attachment,
    decode_attachment,
    decode_remote_attachment,
    decrypt_attachment,
    encode_attachment,
    encode_remote_attachment,
    encrypt_attachment,
)
from gateway.media.carrier import CarrySettings, MediaCarrier
from gateway.media.fetch import FetchPolicy, MediaFetcher
from gateway.media.local_store import LocalBlobStore, MediaKeys
from gateway.media.serve import LOCAL_MEDIA, add_media_routes
from gateway.media.transfer import MediaLimits
from gateway.testing.chat_fake import SentChat
from gateway.xmtp.client import content_type_of
from tests.delivery.world import KEYS, POSTGRES_URL, World, until, world

PHOTO = b"\xff\xd8\xff\xe0" + secrets.token_bytes(50_000)  # a remote attachment
ICON = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(500)  # inline
LIMITS = MediaLimits(max_item_bytes=1_000_000, max_message_bytes=1_500_000, max_items=10,
                     content_types=("image/*",))


@dataclass
class Files:
    """The file server: what it serves, every request, and the knobs a test turns."""

    base: str = ""
    served: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    fetches: list[str] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    stall: asyncio.Event | None = None  # requests wait for it while it is set
    failures: int = 0  # the next requests answer 503

    def put(self, name: str, data: bytes, kind: str = "image/jpeg") -> str:
        self.served[name] = (data, kind)
        return f"{self.base}files/{name}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.skipif(
    POSTGRES_URL is None, reason="GATEWAY_TEST_POSTGRES_URL not set"))])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def carried(tmp_path: Path) -> AsyncIterator[tuple[Files, MediaCarrier]]:
    files = Files()

    async def serve(request: web.Request) -> web.Response:
        files.fetches.append(request.match_info["name"])
        files.arrived.set()
        if files.stall is not None:
            await files.stall.wait()
        if files.failures:
            files.failures -= 1
            raise web.HTTPServiceUnavailable()
        found = files.served.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        return web.Response(body=found[0], content_type=found[1])

    store = LocalBlobStore(tmp_path / "media", MediaKeys.derive(KEYS, "k1"), base_url="")
    app = web.Application()
    app.router.add_get("/files/{name}", serve)
    add_media_routes(app)
    app[LOCAL_MEDIA] = store
    async with TestServer(app, host="127.0.0.1") as server:
        files.base = str(server.make_url("/"))
        store.base_url = files.base.rstrip("/")
        async with MediaFetcher(FetchPolicy(max_bytes=LIMITS.max_item_bytes,
                                            allow_insecure=True, timeout_seconds=5)) as fetcher:
            yield files, MediaCarrier(store, fetcher, CarrySettings(
                limits=LIMITS, inline_max_bytes=1000, item_seconds=5.0))


@pytest.fixture
async def w(backend: str, tmp_path: Path,
            carried: tuple[Files, MediaCarrier]) -> AsyncIterator[World]:
    async with world(backend, tmp_path, media=carried[1]) as found:
        yield found


async def opened(carrier: MediaCarrier, post: SentChat) -> Attachment:
    """What a wallet gets of a post: the inline file, or the remote one opened."""
    assert post.encoded is not None
    if content_type_of(post.encoded).startswith("xmtp.org/attachment:"):
        return decode_attachment(post.encoded)
    remote = decode_remote_attachment(post.encoded)
    fetched = await carrier.fetcher.fetch(remote.url)
    return decrypt_attachment(fetched.data, remote)


def file_posts(w: World) -> list[SentChat]:
    return [s for s in w.chat.sent if s.encoded is not None]


async def phone_notices(w: World) -> list[str]:
    return [b for b in w.texts_to_phone() if b]


class TestPhoneToWallet:
    async def test_the_text_then_each_file_as_an_attachment_in_order_each_keyed(
            self, w: World, carried: tuple[Files, MediaCarrier]) -> None:
        files, carrier = carried
        await w.start()
        await w.phone_says("two", media=[Media(files.put("a", PHOTO), "image/jpeg"),
                                         Media(files.put("b", ICON, "image/png"), None)])
        await w.settled(Channel.XMTP)
        text, photo, icon = w.chat.sent
        assert text.text == "two"
        assert [s.key for s in (photo, icon)] == [f"{text.key}:0", f"{text.key}:1"]
        assert (await opened(carrier, photo)).data == PHOTO
        assert (await opened(carrier, icon)) == Attachment("media-2.png", "image/png", ICON)

    async def test_the_webhook_never_waits_for_a_file(
            self, w: World, carried: tuple[Files, MediaCarrier]) -> None:
        files, _ = carried
        files.stall = asyncio.Event()
        await w.start()
        async with asyncio.timeout(2):  # recorded and answered while the fetch hangs
            await w.phone_says("look", media=[Media(files.put("a", PHOTO), "image/jpeg")])
        await asyncio.wait_for(files.arrived.wait(), 5)
        assert w.posts() == ["look"] and file_posts(w) == []
        files.stall.set()
        await w.settled(Channel.XMTP)
        assert len(file_posts(w)) == 1

    async def test_a_process_killed_while_fetching_posts_the_file_once_after_restart(
            self, w: World, carried: tuple[Files, MediaCarrier]) -> None:
        files, carrier = carried
        files.stall = asyncio.Event()
        process = await w.start()
        await w.phone_says("look", media=[Media(files.put("a", PHOTO), "image/jpeg")])
        await asyncio.wait_for(files.arrived.wait(), 5)
        await w.kill()
        files.stall.set()
        await w.start(process.holder.id)  # the same data directory: taken back at once
        await w.settled(Channel.XMTP)
        [photo] = file_posts(w)
        assert (await opened(carrier, photo)).data == PHOTO
        assert w.posts().count("look") == 1 and files.fetches == ["a", "a"]

    async def test_a_process_killed_after_posting_a_file_does_not_fetch_or_post_it_again(
            self, w: World, carried: tuple[Files, MediaCarrier]) -> None:
        files, carrier = carried
        w.chat.hold = asyncio.Event()  # the post is made; its answer never comes
        process = await w.start()
        await w.phone_says("", media=[Media(files.put("a", PHOTO), "image/jpeg")])
        await until(lambda: _true_if(file_posts(w)))
        await w.kill()
        w.chat.hold = None
        await w.start(process.holder.id)
        await w.settled(Channel.XMTP)
        [photo] = file_posts(w)
        assert w.chat.republished == [photo] and files.fetches == ["a"]
        assert (await opened(carrier, photo)).data == PHOTO
        [delivery] = await w.deliveries(Channel.XMTP)
        assert (delivery.state, delivery.provider_id) == (DeliveryState.SENT, photo.message_id)

    async def test_a_file_that_cannot_be_fetched_is_retried_then_left_out_and_reported(
            self, w: World, carried: tuple[Files, MediaCarrier]) -> None:
        files, _ = carried
        files.failures = 100
        await w.start()
        await w.phone_says("see this", media=[Media(files.put("a", PHOTO), "image/jpeg")])
        await w.settled(Channel.XMTP)
        await w.settled()
        assert w.posts() == ["see this"] and file_posts(w) == []
        assert len(files.fetches) == w.chat_settings.backoff.max_attempts
        [notice] = await phone_notices(w)
        assert notice.startswith("Not delivered to the wallet: media-1.jpg (")
        assert "503" in notice

    async def test_a_message_of_only_refused_files_fails_and_the_phone_is_told(
            self, w: World, carried: tuple[Files, MediaCarrier]) -> None:
        files, _ = carried
        await w.start()
        await w.phone_says("", media=[Media(files.put("a.pdf", b"%PDF-1.4", "application/pdf"),
                                            "application/pdf")])
        await w.settled()
        assert w.chat.sent == []
        [delivery] = await w.deliveries(Channel.XMTP)
        assert delivery.state is DeliveryState.FAILED
        assert await phone_notices(w) == [
            "Not delivered: media-1.pdf (application/pdf files are not carried)."]

    async def test_files_past_the_lease_go_on_under_a_new_one(
            self, tmp_path: Path, backend: str, carried: tuple[Files, MediaCarrier]) -> None:
        from gateway.delivery import EngineSettings
        from tests.delivery.world import FAST
        files, carrier = carried
        # room for one file per lease (a send's 2 s, a file's 5 s and 5 s to spare need
        # 12): after it, the rest is handed back and claimed again
        short = EngineSettings(**{**{f: getattr(FAST, f) for f in FAST.__dataclass_fields__},
                                  "lease": 11.0})
        async with world(backend, tmp_path, media=carrier, chat_settings=short) as w:
            await w.start()
            await w.phone_says("", media=[Media(files.put(n, ICON, "image/png"), "image/png")
                                          for n in "abc"])
            await w.settled(Channel.XMTP)
            assert [s.key.rsplit(":", 1)[1] for s in file_posts(w) if s.key] == ["0", "1", "2"]
            assert files.fetches == ["a", "b", "c"]  # each once
            assert [s.key for s in w.chat.republished] == [  # the earlier, under new leases
                file_posts(w)[0].key, file_posts(w)[0].key, file_posts(w)[1].key]


class TestWalletToPhone:
    async def test_an_inline_attachment_goes_as_mms_from_the_gateways_own_url(
            self, w: World, carried: tuple[Files, MediaCarrier]) -> None:
        _, carrier = carried
        await w.start()
        await w.phone_says("hi")
        await w.wallet_says(None, content_type="attachment",
                            encoded=encode_attachment(Attachment("i.png", "image/png", ICON)))
        await w.settled()
        [mms] = [a.text for a in w.phone.accepted if a.text.media_urls]
        assert mms.body == "i.png"
        [url] = mms.media_urls
        fetched = await carrier.fetcher.fetch(url)
        assert (fetched.data, fetched.content_type) == (ICON, "image/png")
        assert URL(url).query.keys() >= {"e", "k", "s"}  # signed, expiring

    async def test_a_remote_attachment_is_fetched_again_when_its_host_failed(
            self, w: World, carried: tuple[Files, MediaCarrier]) -> None:
        files, carrier = carried
        sealed = encrypt_attachment(Attachment("p.jpg", "image/jpeg", PHOTO))
        url = files.put("sealed", sealed.payload, "application/octet-stream")
        await w.start()
        await w.phone_says("hi")
        files.failures = 1
        await w.wallet_says(None, content_type="remoteStaticAttachment",
                            encoded=encode_remote_attachment(sealed.remote(url)))
        await w.settled()
        [mms] = [a.text for a in w.phone.accepted if a.text.media_urls]
        assert (await carrier.fetcher.fetch(mms.media_urls[0])).data == PHOTO
        assert files.fetches == ["sealed", "sealed"]
        async with w.store.transaction() as tx:
            from gateway.store.tables import messages
            rows = await tx.connection.execute(messages.select().where(
                messages.c.source == MessageSource.XMTP.value))
            [row] = list(rows)
            message = await tx.get_message(row.id)
        assert message is not None and message.media[0].remote is not None
        assert message.media[0].remote.secret == sealed.secret  # kept, sealed at rest


async def _true_if(found: object) -> bool | None:
    return True if found else None
