"""The media step and the phone channel's file preparation, on a real local blob store
(a directory under tmp_path): what a wallet's attachment is described as before it is
recorded, and what a phone on each channel may get of it. Nothing here fetches a URL."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import xmtp_bindings as xb
from yarl import URL

from gateway.domain.ids import ConversationId, MessageId, WalletAddress
from gateway.domain.models import Channel, Media, Message, MessageSource
from gateway.domain.ports import ChatMessage
from gateway.media.attachments import (
    Attachment,
    RemoteAttachment,
    encode_attachment,
    encode_remote_attachment,
)
from gateway.media.carrier import (
    Budget,
    CarrySettings,
    MediaCarrier,
    group_blob_key,
    phone_blob_key,
    wallet_blob_key,
)
from gateway.media.fetch import FetchPolicy, MediaFetcher
from gateway.media.local_store import LocalBlobStore, MediaKeys
from gateway.media.transfer import MediaLimits

LIMITS = MediaLimits(max_item_bytes=10_000, max_message_bytes=15_000, max_items=3,
                     content_types=("image/*", "application/pdf"))
WALLET = WalletAddress("0xAb5801a7D398351b8bE11C439e05C5B3259aeC9B")
T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
async def carrier(tmp_path: Path) -> AsyncIterator[MediaCarrier]:
    store = LocalBlobStore(tmp_path, MediaKeys.derive({"k1": secrets.token_bytes(32)}, "k1"),
                           base_url="https://gw.example")
    async with MediaFetcher(FetchPolicy(max_bytes=LIMITS.max_item_bytes)) as fetcher:
        yield MediaCarrier(store, fetcher, CarrySettings(limits=LIMITS))


def chat(content_type: str, encoded: bytes, message_id: str = "ab" * 32) -> ChatMessage:
    return ChatMessage(group_id="g", message_id=message_id, sender=WALLET, sent_at_ns=1,
                       text=None, content_type=content_type, encoded=encoded)


def remote(filename: str = "doc.pdf", length: int = 1234) -> RemoteAttachment:
    return RemoteAttachment(url="https://files.example/x", content_digest="00" * 32,
                            secret=b"s" * 32, salt=b"t" * 32, nonce=b"n" * 12,
                            content_length=length, filename=filename)


def message(*media: Media) -> Message:
    return Message(MessageId("IM" + "1" * 32), ConversationId("CH1"), 0, None, None, media,
                   {}, MessageSource.XMTP, "x", T0)


async def held(carrier: MediaCarrier, name: str, kind: str, data: bytes) -> Media:
    """A wallet's inline file, as the media step kept it (one XMTP message each)."""
    described = await carrier.describe(chat("attachment", encode_attachment(
        Attachment(name, kind, data)), message_id=secrets.token_hex(32)))
    assert described.refused is None, described.refused
    [media] = described.media
    return media


class TestDescribing:
    async def test_an_inline_file_is_stored_and_described_by_its_key(
            self, carrier: MediaCarrier) -> None:
        data = b"\x89PNG" + secrets.token_bytes(100)
        described = await carrier.describe(chat("attachment", encode_attachment(
            Attachment("cat.png", "image/png", data))))
        [media] = described.media
        assert (media.url, media.content_type, media.filename, media.size) == (
            "", "image/png", "cat.png", len(data))
        assert media.blob_key == wallet_blob_key("ab" * 32) and media.remote is None
        assert (await carrier.store.get(media.blob_key)).data == data

    async def test_a_remote_attachment_is_described_without_fetching_it(
            self, carrier: MediaCarrier) -> None:
        described = await carrier.describe(chat("remoteStaticAttachment",
                                                encode_remote_attachment(remote())))
        [media] = described.media
        assert (media.url, media.content_type, media.filename, media.size) == (
            "https://files.example/x", "application/pdf", "doc.pdf", 1234)
        assert media.remote is not None and media.remote.secret == b"s" * 32

    async def test_a_multi_remote_attachment_is_each_of_its_files(
            self, carrier: MediaCarrier) -> None:
        def info(name: str) -> xb.FfiRemoteAttachment:
            r = remote(name)
            return xb.FfiRemoteAttachment(
                secret=r.secret, content_digest=r.content_digest, nonce=r.nonce,
                scheme=r.scheme, url=r.url, salt=r.salt, content_length=r.content_length,
                filename=r.filename)
        encoded = xb.encode_multi_remote_attachment(xb.FfiMultiRemoteAttachment(
            attachments=[info("a.png"), info("b.jpg")]))
        described = await carrier.describe(chat("multiRemoteStaticAttachment", encoded))
        assert [(m.filename, m.content_type) for m in described.media] == [
            ("a.png", "image/png"), ("b.jpg", "image/jpeg")]

    @pytest.mark.parametrize(("attachment", "reason"), [
        (Attachment("big.png", "image/png", bytes(10_001)), "over the 10000-byte cap"),
        (Attachment("x.exe", "application/x-msdownload", b"MZ"),
         "application/x-msdownload files are not carried"),
    ])
    async def test_an_inline_file_past_the_limits_is_refused_not_stored(
            self, carrier: MediaCarrier, attachment: Attachment, reason: str) -> None:
        described = await carrier.describe(chat("attachment", encode_attachment(attachment)))
        assert described.media == () and reason in (described.refused or "")
        assert await carrier.store.older_than(datetime(2100, 1, 1, tzinfo=UTC)) == []

    async def test_a_malformed_attachment_is_refused(self, carrier: MediaCarrier) -> None:
        described = await carrier.describe(chat("remoteStaticAttachment",
                                                encode_attachment(Attachment("a", "x/y", b""))))
        assert described.refused is not None and "expected" in described.refused

    async def test_other_content_passes_as_it_is(self, carrier: MediaCarrier) -> None:
        text = chat("text", b"")
        assert await carrier.describe(text) is text


class TestForPhones:
    async def test_held_files_are_stored_for_the_phone_under_signed_short_lived_urls(
            self, carrier: MediaCarrier) -> None:
        data = b"\x89PNG" + secrets.token_bytes(100)
        media = await held(carrier, "cat.png", "image/png", data)
        ready = await carrier.for_phone(message(media), channel=Channel.SMS, as_links=False)
        [url] = ready.urls
        assert ready.links == () and ready.refused == ()
        key = URL(url).path.removeprefix("/media/")
        assert key == phone_blob_key("IM" + "1" * 32, 0)
        assert (await carrier.store.get(key)).data == data

    async def test_an_api_callers_url_goes_as_it_is(self, carrier: MediaCarrier) -> None:
        ready = await carrier.for_phone(message(Media("https://a.example/b.png")),
                                        channel=Channel.SMS, as_links=False)
        assert ready.urls == ("https://a.example/b.png",)

    async def test_links_name_each_file(self, carrier: MediaCarrier) -> None:
        media = await held(carrier, "cat.png", "image/png", b"\x89PNG")
        ready = await carrier.for_phone(message(media), channel=Channel.SMS, as_links=True)
        [(name, url)] = ready.links
        assert name == "cat.png" and url.startswith("https://gw.example/media/phone/")
        assert ready.urls == ()

    async def test_whatsapp_takes_only_its_own_types(self, carrier: MediaCarrier) -> None:
        gif = await held(carrier, "a.gif", "image/gif", b"GIF89a")
        png = await held(carrier, "b.png", "image/png", b"\x89PNG")
        ready = await carrier.for_phone(message(gif, png), channel=Channel.WHATSAPP,
                                        as_links=False)
        assert len(ready.urls) == 1
        assert ready.refused == ("a.gif (WhatsApp does not take image/gif files)",)

    async def test_a_message_is_held_to_its_byte_allowance(self, carrier: MediaCarrier) -> None:
        one = await held(carrier, "a.png", "image/png", bytes(8_000))
        two = await held(carrier, "b.png", "image/png", bytes(8_000))
        ready = await carrier.for_phone(message(one, two), channel=Channel.SMS,
                                        as_links=False)
        assert len(ready.urls) == 1 and "15000-byte allowance" in ready.refused[0]

    async def test_a_file_gone_past_retention_is_refused(self, carrier: MediaCarrier) -> None:
        gone = Media("", "image/png", "old.png", 4, blob_key="wallet/gone")
        ready = await carrier.for_phone(message(gone), channel=Channel.SMS, as_links=False)
        assert ready.urls == () and ready.refused[0].startswith("old.png (")


class TestGroupContent:
    async def test_past_the_count_or_the_allowance_nothing_is_fetched(
            self, carrier: MediaCarrier) -> None:
        from gateway.errors import MediaRefused
        phone = replace(message(*[Media(f"https://api.twilio.com/m/{i}") for i in range(4)]),
                        source=MessageSource.SMS)
        with pytest.raises(MediaRefused, match="more than 3 files"):
            await carrier.group_content(phone, 3, carrier.budget())
        with pytest.raises(MediaRefused, match="allowance"):
            await carrier.group_content(phone, 0, Budget(0))

    def test_keys_are_stable_per_message_and_item(self) -> None:
        assert group_blob_key("IM1", 2) == group_blob_key("IM1", 2) == "xmtp/IM1-2"
        assert wallet_blob_key("ab") == wallet_blob_key("ab") != wallet_blob_key("ac")
