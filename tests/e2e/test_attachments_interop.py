"""XMTP attachments between real libxmtp clients on the devnode: what our code seals
and encodes is what libxmtp reads, and what another client receives opens back to the
same bytes through our fetcher and decryption."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import xmtp_bindings as xb
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.domain.clock import ManualClock
from gateway.media.attachments import (
    ATTACHMENT_CONTENT_TYPE,
    REMOTE_ATTACHMENT_CONTENT_TYPE,
    Attachment,
    RemoteAttachment,
    decode_attachment,
    encode_attachment,
    encode_remote_attachment,
)
from gateway.media.fetch import FetchPolicy, MediaFetcher
from gateway.media.local_store import LocalBlobStore, MediaKeys
from gateway.media.serve import LOCAL_MEDIA, add_media_routes
from gateway.media.transfer import download_attachment, upload_attachment
from gateway.xmtp.client import Conversation, XmtpClient, XmtpMessage

pytestmark = pytest.mark.e2e

MakeClient = Callable[..., Awaitable[XmtpClient]]
PHOTO = Attachment("sunset.jpg", "image/jpeg", b"\xff\xd8\xff\xe0" + secrets.token_bytes(300_000))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LocalBlobStore]:
    """The gateway's local blob store, served on 127.0.0.1 as the gateway serves it."""
    blobs = LocalBlobStore(tmp_path / "media", MediaKeys.derive({"k1": bytes(32)}, "k1"),
                           base_url="http://unset", clock=ManualClock(datetime.now(UTC)))
    app = web.Application()
    app[LOCAL_MEDIA] = blobs
    add_media_routes(app)
    async with TestServer(app, host="127.0.0.1") as server:
        blobs.base_url = str(server.make_url("")).rstrip("/")
        yield blobs


@pytest.fixture
async def fetcher() -> AsyncIterator[MediaFetcher]:
    async with MediaFetcher(FetchPolicy(max_bytes=1_000_000, allow_insecure=True)) as opened:
        yield opened


async def received(client: XmtpClient, conversation_id: str) -> XmtpMessage:
    await client.sync_all()
    [message] = await client.conversation(conversation_id).messages()
    return message


def decoded_by_libxmtp(conversation: Conversation) -> list[Any]:
    """libxmtp's own reading of the messages (its content-type registry)."""
    options = xb.FfiListMessagesOptions(
        sent_before_ns=None, sent_after_ns=None, limit=None, delivery_status=None,
        direction=None, content_types=None, exclude_content_types=None,
        exclude_sender_inbox_ids=None, sort_by=None, inserted_after_ns=None,
        inserted_before_ns=None)
    return [m.content() for m in conversation._ffi.find_enriched_messages(options)]


class TestRemoteAttachments:
    async def test_a_remote_attachment_we_seal_opens_for_another_client(
            self, make_client: MakeClient, store: LocalBlobStore,
            fetcher: MediaFetcher) -> None:
        alice, bob = await make_client(), await make_client()
        group = await alice.new_group([bob.address], name="photos")
        remote = await upload_attachment(store, PHOTO, ttl=timedelta(hours=1))
        await group.send_encoded(encode_remote_attachment(remote))

        message = await received(bob, group.id)
        assert message.content_type == REMOTE_ATTACHMENT_CONTENT_TYPE
        [content] = [c for c in decoded_by_libxmtp(bob.conversation(group.id))
                     if c.is_remote_attachment()]
        seen = content[0]  # libxmtp's FfiRemoteAttachment, read by bob's client
        assert (seen.url, seen.content_digest, seen.scheme, seen.filename) == (
            remote.url, remote.content_digest, "https://", "sunset.jpg")
        # bob's side: the bindings decode the message, our code fetches and opens it
        found = xb.decode_remote_attachment(message.encoded)
        as_received = RemoteAttachment(
            url=found.url, content_digest=found.content_digest, secret=bytes(found.secret),
            salt=bytes(found.salt), nonce=bytes(found.nonce), scheme=found.scheme,
            content_length=found.content_length, filename=found.filename)
        assert await download_attachment(fetcher, as_received) == PHOTO


class TestInlineAttachments:
    async def test_an_inline_attachment_reads_the_same_on_the_other_side(
            self, make_client: MakeClient) -> None:
        alice, bob = await make_client(), await make_client()
        dm = await alice.new_dm(bob.address)
        small = Attachment("note.txt", "text/plain", b"see you at 5")
        await dm.send_encoded(encode_attachment(small))

        message = await received(bob, dm.id)
        assert message.content_type == ATTACHMENT_CONTENT_TYPE and message.text is None
        assert decode_attachment(message.encoded) == small
        [content] = [c for c in decoded_by_libxmtp(bob.conversation(dm.id))
                     if c.is_attachment()]
        assert (content[0].filename, content[0].mime_type, bytes(content[0].content)) == (
            "note.txt", "text/plain", b"see you at 5")
