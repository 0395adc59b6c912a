"""``XmtpChatNetwork`` against a devnode with real libxmtp wallets, without the rest of
the gateway: groups, keyed sends, catch-up from high-water marks, then the stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import xmtp_bindings as xb

from gateway.domain.ids import WalletAddress
from gateway.domain.ports import ChatMessage, Reference
from gateway.errors import MediaRefused, WalletNotReachable
from gateway.media.attachments import Attachment, decode_attachment, encode_attachment
from gateway.xmtp.client import XmtpClient
from gateway.xmtp.devnode import DevNode
from gateway.xmtp.network import XmtpChatNetwork

pytestmark = pytest.mark.e2e

GATEWAY_KEY = "0x" + "42" * 32
DB_KEY = bytes(range(32))
MakeClient = Callable[..., Awaitable[XmtpClient]]  # the e2e conftest's make_client


@pytest.fixture
async def network(devnode: DevNode, tmp_path: Path) -> AsyncIterator[XmtpChatNetwork]:
    network = await XmtpChatNetwork.open(
        node_url=devnode.url, private_key=GATEWAY_KEY, db_path=tmp_path / "gw.db3",
        encryption_key=DB_KEY)
    yield network
    await network.close()


class Marks:
    """High-water marks as the store keeps them, recorded per group."""

    def __init__(self) -> None:
        self.marks: dict[str, int] = {}

    async def __call__(self, group_id: str) -> int | None:
        return self.marks.get(group_id)


async def take(stream: AsyncIterator[ChatMessage], count: int) -> list[ChatMessage]:
    async with asyncio.timeout(15):
        return [await anext(stream) for _ in range(count)]


class TestGroups:
    async def test_a_group_is_named_and_holds_the_wallets(
            self, network: XmtpChatNetwork, make_client: MakeClient) -> None:
        wallet = await make_client()
        group_id = await network.create_group(name="SMS · +1 555-123-0001",
                                              members=[WalletAddress(wallet.address)])
        await wallet.sync_all()
        group = wallet.conversation(group_id)
        assert group.name == "SMS · +1 555-123-0001"
        assert await network.is_reachable(WalletAddress(wallet.address))

    async def test_a_renamed_group_shows_its_new_name_to_its_wallets(
            self, network: XmtpChatNetwork, make_client: MakeClient) -> None:
        wallet = await make_client()
        group_id = await network.create_group(name="Support",
                                              members=[WalletAddress(wallet.address)])
        await wallet.sync_all()
        assert wallet.conversation(group_id).name == "Support"
        await network.rename_group(group_id, "Support One")
        await wallet.sync_all()
        assert wallet.conversation(group_id).name == "Support One"

    async def test_a_wallet_not_on_xmtp_is_refused(self, network: XmtpChatNetwork) -> None:
        stranger = WalletAddress("0x" + "ab" * 20)
        assert not await network.is_reachable(stranger)
        with pytest.raises(WalletNotReachable):
            await network.create_group(name="x", members=[stranger])


class TestKeyedSends:
    async def test_a_send_retried_with_its_key_posts_the_message_once(
            self, network: XmtpChatNetwork, make_client: MakeClient) -> None:
        wallet = await make_client()
        group_id = await network.create_group(name="g", members=[WalletAddress(wallet.address)])
        first = await network.send(group_id, "only once", key="MSG1")
        again = await network.send(group_id, "only once", key="MSG1")
        other = await network.send(group_id, "only once", key="MSG2")
        assert first == again != other

        await wallet.sync_all()
        texts = [m.text for m in await wallet.conversation(group_id).messages()]
        assert texts == ["only once", "only once"]  # MSG1 once, MSG2 once

    async def test_a_key_survives_a_restart(self, devnode: DevNode, tmp_path: Path,
                                            make_client: MakeClient) -> None:
        wallet = await make_client()
        options = {"node_url": devnode.url, "private_key": GATEWAY_KEY,
                   "db_path": tmp_path / "gw.db3", "encryption_key": DB_KEY}
        network = await XmtpChatNetwork.open(**options)  # type: ignore[arg-type]
        group_id = await network.create_group(name="g", members=[WalletAddress(wallet.address)])
        first = await network.send(group_id, "before the restart", key="MSG1")
        await network.close()
        network = await XmtpChatNetwork.open(**options)  # type: ignore[arg-type]
        try:
            assert await network.send(group_id, "before the restart", key="MSG1") == first
        finally:
            await network.close()
        await wallet.sync_all()
        assert len(await wallet.conversation(group_id).messages()) == 1

    async def test_a_send_that_died_between_prepare_and_log_is_posted_once(
            self, devnode: DevNode, tmp_path: Path, make_client: MakeClient) -> None:
        """libxmtp's prepare only stores the message: the publish intent is queued by
        ``publish_stored``. A message prepared by a process that died before logging its
        id is never published, so the retry's own copy is the only one the group gets."""
        wallet = await make_client()
        options = {"node_url": devnode.url, "private_key": GATEWAY_KEY,
                   "db_path": tmp_path / "gw.db3", "encryption_key": DB_KEY}
        network = await XmtpChatNetwork.open(**options)  # type: ignore[arg-type]
        group_id = await network.create_group(name="g", members=[WalletAddress(wallet.address)])

        async def die_after_prepare() -> str:
            return (await network._group(group_id)).prepare_text("said once")

        orphan = await network._thread.run(die_after_prepare())
        await network.close()
        network = await XmtpChatNetwork.open(**options)  # type: ignore[arg-type]
        try:
            retried = await network.send(group_id, "said once", key="MSG1")
            await network.send(group_id, "and then this", key="MSG2")
            async def sync() -> None:  # a sync publishes no orphan either
                await (await network._group(group_id)).sync()

            await network._thread.run(sync())
        finally:
            await network.close()
        await wallet.sync_all()
        messages = await wallet.conversation(group_id).messages()
        assert [m.text for m in messages] == ["said once", "and then this"]
        assert orphan != retried == messages[0].id


class TestMessages:
    async def test_catch_up_from_the_marks_then_the_stream_without_own_messages(
            self, network: XmtpChatNetwork, make_client: MakeClient) -> None:
        wallet = await make_client()
        group_id = await network.create_group(name="g", members=[WalletAddress(wallet.address)])
        await network.send(group_id, "from the gateway")
        await wallet.sync_all()
        group = wallet.conversation(group_id)
        await group.send_text("seen before")
        await group.send_text("sent while away")
        marks = Marks()
        seen = (await group.messages())[-2]
        marks.marks[group_id] = seen.sent_at_ns

        stream = network.messages(marks)
        caught_up = await take(stream, 2)
        assert [m.text for m in caught_up] == ["seen before", "sent while away"]  # from the mark
        await group.send_text("live")
        [live] = await take(stream, 1)
        assert live.text == "live"
        assert live.sender == wallet.address and live.group_id == group_id
        assert live.content_type == "text"
        await stream.aclose()  # type: ignore[attr-defined]

    async def test_a_reaction_comes_with_its_emoji_and_the_start_of_its_message(
            self, network: XmtpChatNetwork, make_client: MakeClient) -> None:
        wallet = await make_client()
        group_id = await network.create_group(name="g", members=[WalletAddress(wallet.address)])
        posted = await network.send(group_id, "see you at 5", key="M1")  # the gateway's own
        await wallet.sync_all()
        group = wallet.conversation(group_id)
        stream = network.messages(Marks())
        await group.send_encoded(reaction(posted, wallet.inbox_id, "👍"))
        [liked] = await take(stream, 1)
        assert (liked.text, liked.content_type, liked.removed) == ("👍", "reaction", False)
        assert liked.reference == Reference(posted, "see you at 5")
        await group.send_encoded(reaction(posted, wallet.inbox_id, "👍", removed=True))
        [unliked] = await take(stream, 1)
        assert (unliked.text, unliked.removed) == ("👍", True)
        await stream.aclose()  # type: ignore[attr-defined]

    async def test_a_reply_comes_with_its_text_and_the_start_of_its_original(
            self, network: XmtpChatNetwork, make_client: MakeClient) -> None:
        wallet = await make_client()
        group_id = await network.create_group(name="g", members=[WalletAddress(wallet.address)])
        await wallet.sync_all()
        group = wallet.conversation(group_id)
        stream = network.messages(Marks())
        original = await group.send_text("shall we meet at five?")
        await take(stream, 1)
        await group.send_encoded(xb.encode_reply(xb.FfiReply(
            reference=original, reference_inbox_id=wallet.inbox_id,
            content=xb.FfiEncodedContent(
                type_id=xb.FfiContentTypeId(authority_id="xmtp.org", type_id="text",
                                            version_major=1, version_minor=0),
                parameters={"encoding": "UTF-8"}, fallback=None, compression=None,
                content=b"yes, 5"))))
        [reply] = await take(stream, 1)
        assert (reply.text, reply.content_type) == ("yes, 5", "reply")
        assert reply.reference == Reference(original, "shall we meet at five?")
        await stream.aclose()  # type: ignore[attr-defined]

    async def test_an_attachment_comes_with_its_encoded_content(
            self, network: XmtpChatNetwork, make_client: MakeClient) -> None:
        wallet = await make_client()
        group_id = await network.create_group(name="g", members=[WalletAddress(wallet.address)])
        await wallet.sync_all()
        group = wallet.conversation(group_id)
        stream = network.messages(Marks())
        sent = encode_attachment(Attachment("a.png", "image/png", b"\x89PNG" + bytes(500)))
        await group.send_encoded(sent)
        [message] = await take(stream, 1)
        assert (message.text, message.content_type, message.encoded) == (
            None, "attachment", sent)
        await stream.aclose()  # type: ignore[attr-defined]


class TestEncodedSends:
    async def test_a_keyed_encoded_send_is_made_once_and_posted_once(
            self, network: XmtpChatNetwork, make_client: MakeClient) -> None:
        wallet = await make_client()
        group_id = await network.create_group(name="g", members=[WalletAddress(wallet.address)])
        made: list[bytes] = []
        picture = Attachment("a.png", "image/png", b"\x89PNG" + bytes(1000))

        async def content() -> bytes:
            made.append(encode_attachment(picture))
            return made[-1]

        first = await network.send_encoded(group_id, content, key="M1:0")
        again = await network.send_encoded(group_id, content, key="M1:0")
        assert first == again and len(made) == 1
        await wallet.sync_all()
        [message] = await wallet.conversation(group_id).messages()
        assert message.id == first and decode_attachment(message.encoded) == picture

    async def test_an_error_making_the_content_sends_nothing(
            self, network: XmtpChatNetwork, make_client: MakeClient) -> None:
        wallet = await make_client()
        group_id = await network.create_group(name="g", members=[WalletAddress(wallet.address)])

        async def refused() -> bytes:
            raise MediaRefused("image/tiff files are not carried")

        with pytest.raises(MediaRefused):
            await network.send_encoded(group_id, refused, key="M1:0")
        await wallet.sync_all()
        assert await wallet.conversation(group_id).messages() == []


def reaction(reference: str, inbox_id: str, emoji: str, *, removed: bool = False) -> bytes:
    return bytes(xb.encode_reaction(xb.FfiReactionPayload(
        reference=reference, reference_inbox_id=inbox_id,
        action=xb.FfiReactionAction.REMOVED if removed else xb.FfiReactionAction.ADDED,
        content=emoji, schema=xb.FfiReactionSchema.UNICODE)))

class TestKeyedGroups:
    async def test_a_creation_cut_short_by_the_process_dying_returns_the_group_it_made(
            self, devnode: DevNode, make_client: MakeClient, tmp_path: Path) -> None:
        """The gateway died after libxmtp made the group and before the creation was
        recorded as done: made again under the same key, it is the same group, with
        every member, and the wallet is in one group, not two."""
        wallet = await make_client()
        member = WalletAddress(wallet.address)
        options = {"node_url": devnode.url, "private_key": GATEWAY_KEY,
                   "db_path": tmp_path / "gw.db3", "encryption_key": DB_KEY}
        network = await XmtpChatNetwork.open(**options)  # type: ignore[arg-type]

        async def die_after_making() -> str:
            network._sends.group_started("CV1")
            group = await network._client.new_group([], name="g", app_data="CV1")
            return group.id

        made = await network._thread.run(die_after_making())
        await network.close()
        network = await XmtpChatNetwork.open(**options)  # type: ignore[arg-type]
        try:
            assert await network.create_group(name="g", members=[member], key="CV1") == made
            assert await network.create_group(name="g", members=[member], key="CV1") == made
            other = await network.create_group(name="g", members=[member], key="CV2")
            assert other != made
        finally:
            await network.close()
        await wallet.sync_all()
        assert sorted(c.id for c in wallet.conversations() if not c.is_dm) == sorted(
            [made, other])
