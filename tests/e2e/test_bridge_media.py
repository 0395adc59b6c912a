"""A photo each way between a simulated phone and a real libxmtp wallet, the bytes
compared at the other end: phone → wallet as an XMTP remote attachment the wallet opens
(fetched from the gateway's URL, checked against its digest, decrypted), wallet → phone
as MMS the simulator fetched from the gateway's signed URL; and ``gateway serve``
SIGKILLed while it fetches a phone's photo: after the restart the photo arrives once."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import xmtp_bindings as xb
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.media.attachments import (
    Attachment,
    decode_attachment,
    decode_remote_attachment,
    decrypt_attachment,
    encode_attachment,
    encode_remote_attachment,
    encrypt_attachment,
)
from gateway.xmtp.client import Conversation, XmtpMessage
from tests.e2e.bridge.harness import Bridge, Wallet, running_bridge

pytestmark = pytest.mark.e2e

SUPPORT = "+15550100001"
PHONE = "+15551230001"
GROUP = "SMS · +1 555-123-0001"
PHOTO = b"\xff\xd8\xff\xe0\x00\x10JFIF" + secrets.token_bytes(400_000)  # over inline
ICON = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(3_000)  # under it: inline


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Bridge]:
    async with running_bridge(tmp_path, wallets=["agent"], rules=lambda w: [
        {"name": "support", "proxy": SUPPORT, "channels": ["sms"], "mode": "fixed",
         "wallets": ["agent"], "sender_label": ""},
    ]) as bridge:
        yield bridge


class FileServer:
    """Files on 127.0.0.1: a wallet's remote attachments, or a phone's media whose fetch
    a test holds (``hold``) to stop the gateway in the middle of it."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.requests: list[str] = []
        self.arrived = asyncio.Event()
        self.hold: asyncio.Event | None = None
        self.base = ""

    def put(self, data: bytes, kind: str) -> str:
        name = secrets.token_hex(8)
        self.files[name] = (data, kind)
        return self.base + name

    async def serve(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.match_info["name"])
        self.arrived.set()
        data, kind = self.files[request.match_info["name"]]
        response = web.StreamResponse(headers={"Content-Type": kind})
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[:1000])
        if self.hold is not None:  # half the file sent, the rest held back
            await self.hold.wait()
        await response.write(data[1000:])
        await response.write_eof()
        return response


@pytest.fixture
async def files() -> AsyncIterator[FileServer]:
    server = FileServer()
    app = web.Application()
    app.router.add_get("/{name}", server.serve)
    async with TestServer(app, host="127.0.0.1") as running:
        server.base = str(running.make_url("/"))
        yield server
        if server.hold is not None:
            server.hold.set()


async def group_of(bridge: Bridge) -> tuple[Wallet, Conversation]:
    agent = bridge.wallets["agent"]
    await bridge.phones.text(PHONE, SUPPORT, "hello")
    group = await agent.group_named(GROUP)
    await agent.wait_for_texts(group, lambda texts: texts == ["hello"])
    return agent, group


async def attachments(group: Conversation, count: int, within: float = 30.0,
                      ) -> list[XmtpMessage]:
    """The group's file messages, oldest first, once there are ``count`` (and no more
    than that after a moment: a photo posted twice would show)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        await group.sync()
        found = [m for m in await group.messages()
                 if m.content_type.startswith(("xmtp.org/attachment:",
                                               "xmtp.org/remoteStaticAttachment:"))]
        if len(found) >= count:
            return found
        if loop.time() > deadline:
            raise AssertionError(f"{len(found)} file(s) in the group, not {count}")
        await asyncio.sleep(0.1)


async def opened(message: XmtpMessage) -> Attachment:
    """What a wallet app shows: an inline file, or a remote one fetched and opened. The
    remote envelope is read by libxmtp's own decoder too."""
    if message.content_type.startswith("xmtp.org/attachment:"):
        return decode_attachment(message.encoded)
    remote = decode_remote_attachment(message.encoded)
    assert xb.decode_remote_attachment(message.encoded).content_digest == remote.content_digest
    async with aiohttp.ClientSession() as session, session.get(remote.url) as response:
        assert response.status == 200
        return decrypt_attachment(await response.read(), remote)


class TestAPhotoEachWay:
    async def test_a_phones_photo_reaches_the_wallet_as_an_attachment_byte_for_byte(
            self, bridge: Bridge) -> None:
        agent, group = await group_of(bridge)
        await bridge.phones.text_with_files(PHONE, SUPPORT, "my photo",
                                            [(PHOTO, "image/jpeg"), (ICON, "image/png")])
        photo, icon = await attachments(group, 2)
        texts = await agent.wait_for_texts(group, lambda t: "my photo" in t)
        assert texts == ["hello", "my photo"]
        got = await opened(photo)
        assert (got.data, got.mime_type, got.filename) == (PHOTO, "image/jpeg", "media-1.jpg")
        assert photo.content_type.startswith("xmtp.org/remoteStaticAttachment:")
        assert (await opened(icon)).data == ICON
        assert icon.content_type.startswith("xmtp.org/attachment:")  # small: inline

    async def test_a_wallets_photo_reaches_the_phone_as_mms_byte_for_byte(
            self, bridge: Bridge, files: FileServer) -> None:
        _, group = await group_of(bridge)
        sealed = encrypt_attachment(Attachment("beach.jpg", "image/jpeg", PHOTO))
        url = files.put(sealed.payload, "application/octet-stream")
        await group.send_encoded(encode_remote_attachment(sealed.remote(url)))
        [(data, kind)] = await bridge.phones.files_received(PHONE, within=30)
        assert (data, kind) == (PHOTO, "image/jpeg")
        [mms] = [m for m in await bridge.phones.inbox(PHONE) if m["media"]]
        assert mms["body"] == "beach.jpg"
        assert mms["media_urls"][0].startswith(bridge.gateway_url + "/media/phone/")

    async def test_a_wallets_inline_file_reaches_the_phone_too(self, bridge: Bridge) -> None:
        _, group = await group_of(bridge)
        await group.send_encoded(encode_attachment(Attachment("icon.png", "image/png", ICON)))
        assert await bridge.phones.files_received(PHONE, within=30) == [(ICON, "image/png")]


class TestKilledMidFetch:
    async def test_a_photo_whose_fetch_a_sigkill_cut_short_arrives_once_after_restart(
            self, bridge: Bridge, files: FileServer) -> None:
        agent, group = await group_of(bridge)
        files.hold = asyncio.Event()
        url = files.put(PHOTO, "image/jpeg")
        await bridge.phones.text(PHONE, SUPPORT, "before the crash", media=[(url, "image/jpeg")])
        await asyncio.wait_for(files.arrived.wait(), 15)  # the gateway is fetching it
        bridge.gateway.kill()
        files.hold.set()
        await bridge.start_gateway()

        [photo] = await attachments(group, 1)
        assert (await opened(photo)).data == PHOTO
        await asyncio.sleep(2.0)  # time enough for a second copy to show, if one came
        assert len(await attachments(group, 1)) == 1
        texts = await agent.wait_for_texts(group, lambda t: "before the crash" in t)
        assert texts.count("before the crash") == 1
        assert len(files.requests) >= 2  # fetched again by the restarted gateway
        assert await bridge.phones.inbox(PHONE) == []  # nothing refused, nothing to report
