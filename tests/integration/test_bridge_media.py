"""Files across the bridge in the running app: a phone's MMS pictures fetched from the
Twilio simulator (with the account's credentials) and posted into the group as XMTP
attachments, a wallet's attachments opened and sent to the phone as MMS from the
gateway's own signed URLs (which the simulator fetches, as Twilio does), links where
MMS does not go, refusals reported in one line, reactions and replies as text."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.domain.models import MessageSource
from gateway.domain.ports import Reference
from gateway.media.attachments import (
    ATTACHMENT_CONTENT_TYPE,
    REMOTE_ATTACHMENT_CONTENT_TYPE,
    Attachment,
    decode_attachment,
    decode_remote_attachment,
    decrypt_attachment,
    encode_attachment,
    encode_remote_attachment,
    encrypt_attachment,
)
from gateway.xmtp.client import content_type_of
from tests.integration.bridge_harness import (
    ALICE,
    PHONE,
    SUPPORT,
    Bridge,
    eventually,
    running_bridge,
)

PHOTO = b"\xff\xd8\xff\xe0" + secrets.token_bytes(300_000)  # over the inline cap
ICON = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(2_000)  # under it
UK_PHONE = "+447700900123"


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Bridge]:
    async with running_bridge(tmp_path, rules=[
        {"name": "support", "proxy": SUPPORT, "channels": ["sms", "whatsapp"],
         "wallets": ["alice"]},
        {"name": "links", "proxy": "+15550100004", "wallets": ["alice"],
         "outbound": {"sms_only": True}},
    ]) as running:
        yield running


@pytest.fixture
async def files() -> AsyncIterator[dict[str, bytes]]:
    """A web server on 127.0.0.1 serving what a test puts in the dict (a wallet's
    remote attachments live somewhere like it)."""
    served: dict[str, bytes] = {}

    async def serve(request: web.Request) -> web.Response:
        data = served.get(request.match_info["name"])
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    async with TestServer(app, host="127.0.0.1") as server:
        served["_base"] = str(server.make_url("/")).encode()
        yield served


def hosted(files: dict[str, bytes], attachment: Attachment) -> bytes:
    """A wallet's remote attachment: the file sealed as XMTP does, served by ``files``."""
    sealed = encrypt_attachment(attachment)
    name = secrets.token_hex(8)
    files[name] = sealed.payload
    return encode_remote_attachment(sealed.remote(files["_base"].decode() + name))


async def opened(encoded: bytes) -> Attachment:
    """What a wallet's app shows of a post: an inline file, or a remote one fetched from
    the gateway's URL and decrypted."""
    kind = content_type_of(encoded)
    if kind == ATTACHMENT_CONTENT_TYPE:
        return decode_attachment(encoded)
    assert kind == REMOTE_ATTACHMENT_CONTENT_TYPE, kind
    remote = decode_remote_attachment(encoded)
    async with aiohttp.ClientSession() as session, session.get(remote.url) as response:
        assert response.status == 200
        return decrypt_attachment(await response.read(), remote)


async def group_with(bridge: Bridge, phone: str = PHONE, to: str = SUPPORT,
                     **text: Any) -> str:
    await bridge.text(phone, to, "hi", **text)
    return str(await eventually(lambda: bridge.chat.groups and bridge.group_of(ALICE)))


def posts(bridge: Bridge, group: str) -> list[Any]:
    return [s for s in bridge.chat.sent if s.group_id == group]


class TestPhoneToWallet:
    async def test_an_mms_arrives_as_its_text_then_each_file_as_an_attachment(
            self, bridge: Bridge) -> None:
        await bridge.text(PHONE, SUPPORT, "two pictures",
                          attachments=[(PHOTO, "image/jpeg"), (ICON, "image/png")])
        group = await eventually(lambda: bridge.chat.groups and bridge.group_of(ALICE))
        sent = await eventually(lambda: len(posts(bridge, group)) >= 3
                                and posts(bridge, group))
        assert sent[0].text == "two pictures" and sent[0].encoded is None
        photo, icon = await opened(sent[1].encoded), await opened(sent[2].encoded)
        assert (photo.data, photo.mime_type, photo.filename) == (PHOTO, "image/jpeg",
                                                                 "media-1.jpg")
        assert (icon.data, icon.mime_type) == (ICON, "image/png")
        assert content_type_of(sent[1].encoded) == REMOTE_ATTACHMENT_CONTENT_TYPE
        assert content_type_of(sent[2].encoded) == ATTACHMENT_CONTENT_TYPE  # small: inline
        assert [s.key for s in sent[1:]] == [f"{sent[0].key}:0", f"{sent[0].key}:1"]

    async def test_a_text_with_more_files_than_sends_fit_in_a_lease_goes(
            self, bridge: Bridge) -> None:
        # four posts at xmtp.send_timeout_seconds (30) each are more than the lease (120):
        # the engine extends the lease for them
        await group_with(bridge)
        await bridge.text(PHONE, SUPPORT, "three pictures",
                          attachments=[(ICON, "image/png")] * 3)
        group = bridge.group_of(ALICE)
        sent = await eventually(lambda: len(posts(bridge, group)) >= 5
                                and posts(bridge, group))
        assert [s.text for s in sent[:2]] == ["hi", "three pictures"]
        assert [(await opened(s.encoded)).data for s in sent[2:]] == [ICON] * 3

    async def test_the_twilio_media_was_fetched_with_the_accounts_credentials(
            self, bridge: Bridge) -> None:
        await bridge.text(PHONE, SUPPORT, "", attachments=[(ICON, "image/png")])
        group = await eventually(lambda: bridge.chat.groups and bridge.group_of(ALICE))
        [post] = await eventually(lambda: posts(bridge, group))
        assert (await opened(post.encoded)).data == ICON
        assert len(bridge.sim.media.media_fetches) == 1  # behind basic auth: it got in

    async def test_a_file_of_a_type_not_carried_is_left_out_and_the_phone_told(
            self, bridge: Bridge) -> None:
        await bridge.text(PHONE, SUPPORT, "see attached",
                          attachments=[(b"MZ" + secrets.token_bytes(100),
                                        "application/x-msdownload"), (ICON, "image/png")])
        group = await eventually(lambda: bridge.chat.groups and bridge.group_of(ALICE))
        [text, icon] = await eventually(lambda: len(posts(bridge, group)) >= 2
                                        and posts(bridge, group))
        assert text.text == "see attached" and (await opened(icon.encoded)).data == ICON
        [notice] = await bridge.sim.wait_for_inbox(PHONE, 1, within=5)
        assert notice.body.startswith("Not delivered to the wallet: media-1")
        assert "application/x-msdownload files are not carried" in notice.body


class TestWalletToPhone:
    async def test_an_inline_attachment_reaches_the_phone_as_mms(self, bridge: Bridge) -> None:
        group = await group_with(bridge)
        bridge.wallet_says(group, ALICE, None, content_type="attachment",
                           encoded=encode_attachment(Attachment("icon.png", "image/png",
                                                                ICON)))
        [mms] = await bridge.sim.wait_for_inbox(PHONE, 1, within=5)
        assert mms.body == "alice: icon.png"
        assert [(m.data, m.content_type) for m in mms.media] == [(ICON, "image/png")]
        [url] = mms.media_urls
        assert url.startswith(bridge.config.server.public_url + "/media/phone/")

    async def test_a_remote_attachment_is_fetched_checked_and_sent_as_mms(
            self, bridge: Bridge, files: dict[str, bytes]) -> None:
        group = await group_with(bridge)
        said = bridge.wallet_says(group, ALICE, None, content_type="remoteStaticAttachment",
                                  encoded=hosted(files, Attachment("photo.jpg", "image/jpeg",
                                                                   PHOTO)))
        [mms] = await bridge.sim.wait_for_inbox(PHONE, 1, within=5)
        assert [(m.data, m.content_type) for m in mms.media] == [(PHOTO, "image/jpeg")]
        async with bridge.store.transaction() as tx:
            message = await tx.find_message(MessageSource.XMTP, said.message_id)
        assert message is not None
        [media] = message.media
        assert (media.filename, media.content_type, media.remote is not None) == (
            "photo.jpg", "image/jpeg", True)

    async def test_a_file_that_does_not_match_its_digest_is_refused_and_the_wallet_told(
            self, bridge: Bridge, files: dict[str, bytes]) -> None:
        group = await group_with(bridge)
        encoded = hosted(files, Attachment("photo.jpg", "image/jpeg", PHOTO))
        name = next(k for k in files if k != "_base")
        files[name] = files[name][:-1] + bytes([files[name][-1] ^ 1])
        bridge.wallet_says(group, ALICE, None, content_type="remoteStaticAttachment",
                           encoded=encoded)
        notice = await eventually(
            lambda: [t for t in bridge.sent_to(group) if t.startswith("Not delivered")])
        assert "photo.jpg" in notice[0] and "digest" in notice[0]
        assert bridge.sim.inbox(PHONE) == []

    async def test_a_phone_outside_the_us_and_canada_gets_a_link_and_the_wallet_is_told(
            self, bridge: Bridge) -> None:
        group = await group_with(bridge, phone=UK_PHONE)
        bridge.wallet_says(group, ALICE, None, content_type="attachment",
                           encoded=encode_attachment(Attachment("icon.png", "image/png",
                                                                ICON)))
        [text] = await bridge.sim.wait_for_inbox(UK_PHONE, 1, within=5)
        assert text.media_urls == ()
        name, _, link = text.body.splitlines()[-1].partition(": ")
        assert name == "icon.png"
        async with aiohttp.ClientSession() as session, session.get(link) as response:
            assert (response.status, await response.read()) == (200, ICON)
        notice = await eventually(
            lambda: [t for t in bridge.sent_to(group) if t.startswith("Sent to")])
        assert "as a link" in notice[0] and "MMS does not reach that number" in notice[0]

    async def test_a_rule_that_says_sms_only_sends_links(self, bridge: Bridge) -> None:
        group = await group_with(bridge, to="+15550100004")
        bridge.wallet_says(group, ALICE, None, content_type="attachment",
                           encoded=encode_attachment(Attachment("icon.png", "image/png",
                                                                ICON)))
        [text] = await bridge.sim.wait_for_inbox(PHONE, 1, within=5)
        assert text.media_urls == () and "icon.png: http" in text.body
        await eventually(lambda: [t for t in bridge.sent_to(group)
                                  if "this number sends files as links" in t])

    async def test_whatsapp_refuses_what_it_does_not_take_and_the_wallet_is_told(
            self, bridge: Bridge) -> None:
        group = await group_with(bridge, channel="whatsapp")
        gif = Attachment("moving.gif", "image/gif", b"GIF89a" + secrets.token_bytes(50))
        bridge.wallet_says(group, ALICE, None, content_type="attachment",
                           encoded=encode_attachment(gif))
        notice = await eventually(
            lambda: [t for t in bridge.sent_to(group) if t.startswith("Not delivered")])
        assert "WhatsApp does not take image/gif files" in notice[0]
        assert bridge.sim.inbox(PHONE) == []


class TestReactionsAndReplies:
    async def test_a_reaction_reads_as_the_emoji_on_the_start_of_its_message(
            self, bridge: Bridge) -> None:
        group = await group_with(bridge)
        bridge.wallet_says(group, ALICE, "👍", content_type="reaction",
                           reference=Reference("abc", "see you at 5"))
        [text] = await bridge.sim.wait_for_inbox(PHONE, 1, within=5)
        assert text.body == 'alice: 👍 to "see you at 5"'

    async def test_a_reply_quotes_the_start_of_its_original(self, bridge: Bridge) -> None:
        group = await group_with(bridge)
        bridge.wallet_says(group, ALICE, "ok, 5 it is", content_type="reply",
                           reference=Reference("abc", "shall we meet at five o'clock "
                                                      "by the old fountain in the park?"))
        [text] = await bridge.sim.wait_for_inbox(PHONE, 1, within=5)
        assert text.body == ('alice: Re "shall we meet at five o\'clock by the...": '
                             "ok, 5 it is")

    async def test_a_reaction_taken_back_is_kept_and_not_texted(self, bridge: Bridge) -> None:
        group = await group_with(bridge)
        bridge.wallet_says(group, ALICE, "👍", content_type="reaction", removed=True,
                           reference=Reference("abc", "see you at 5"))
        bridge.wallet_says(group, ALICE, "after")
        [text] = await bridge.sim.wait_for_inbox(PHONE, 1, within=5)
        assert text.body == "alice: after"
