"""Restarts: of the devnode (same SQLite file), of a client (same libxmtp database), and a
second installation of the same wallet."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.errors import ChatNetworkError
from gateway.xmtp.client import XmtpClient
from gateway.xmtp.devnode import DevNode

pytestmark = pytest.mark.e2e

MakeClient = Callable[..., Awaitable[XmtpClient]]  # the make_client fixture


async def texts_after_sync(client: XmtpClient, conversation_id: str) -> list[str]:
    await client.sync_all()
    messages = await client.conversation(conversation_id).messages()
    return [m.text for m in messages if m.text is not None]


class TestDevnodeRestart:
    async def test_clients_carry_on_after_the_devnode_restarts_on_its_database(
            self, tmp_path: Path) -> None:
        db = str(tmp_path / "devnode.db")
        node = await DevNode.open(db=db)
        port = node.port
        try:
            alice = await XmtpClient.create(node_url=node.url, private_key=secrets.token_bytes(32))
            bob = await XmtpClient.create(node_url=node.url, private_key=secrets.token_bytes(32))
            dm = await alice.new_dm(bob.address)
            await dm.send_text("before restart")
            assert await texts_after_sync(bob, dm.id) == ["before restart"]
        finally:
            await node.close()

        async with DevNode.start(db=db, port=port):
            # identities, key packages and the conversation survived; cursors still fit
            await bob.conversation(dm.id).send_text("after restart, from bob")
            await dm.send_text("after restart, from alice")
            expected = ["before restart", "after restart, from bob", "after restart, from alice"]
            assert await texts_after_sync(alice, dm.id) == expected
            assert await texts_after_sync(bob, dm.id) == expected
            carol = await XmtpClient.create(node_url=f"http://127.0.0.1:{port}",
                                            private_key=secrets.token_bytes(32))
            group = await carol.new_group([alice.address, bob.address])
            await group.send_text("new group after restart")
            assert await texts_after_sync(alice, group.id) == ["new group after restart"]


class TestStreamAcrossRestart:
    async def test_a_stream_fails_loudly_when_the_node_stops_and_a_new_one_resumes(
            self, tmp_path: Path) -> None:
        db = str(tmp_path / "devnode.db")
        node = await DevNode.open(db=db)
        port = node.port
        alice = await XmtpClient.create(node_url=node.url, private_key=secrets.token_bytes(32))
        bob = await XmtpClient.create(node_url=node.url, private_key=secrets.token_bytes(32))
        dm = await alice.new_dm(bob.address)
        await dm.send_text("one")
        await bob.sync_all()
        stream = await bob.stream_all_messages()
        await node.close()

        async def drain() -> None:
            async for _ in stream:
                pass

        with pytest.raises(ChatNetworkError, match="stream"):
            await asyncio.wait_for(drain(), 10)
        await stream.close()

        async with DevNode.start(db=db, port=port):
            await dm.send_text("two, sent while bob's stream was down")
            async with await bob.stream_all_messages() as resumed:
                await dm.send_text("three")
                await bob.sync_all()  # catch-up after a drop, as the gateway's adapter does
                texts = [m.text for m in await bob.conversation(dm.id).messages()]
                assert texts[:2] == ["one", "two, sent while bob's stream was down"]
                live = await asyncio.wait_for(anext(aiter(resumed)), 10)
                assert live.text in ("two, sent while bob's stream was down", "three")


class TestClientRestart:
    async def test_a_client_reopened_on_its_database_keeps_its_identity_and_history(
            self, make_client: MakeClient, tmp_path: Path) -> None:
        wallet, db_key = secrets.token_bytes(32), secrets.token_bytes(32)
        db_path = str(tmp_path / "bob.db3")
        alice = await make_client()
        bob = await make_client(private_key=wallet, db_path=db_path, encryption_key=db_key)
        dm = await alice.new_dm(bob.address)
        await dm.send_text("one")
        assert await texts_after_sync(bob, dm.id) == ["one"]
        inbox_id, installation_id = bob.inbox_id, bob.installation_id
        bob.close()
        del bob

        await dm.send_text("two, while bob was away")
        bob = await make_client(private_key=wallet, db_path=db_path, encryption_key=db_key)
        assert (bob.inbox_id, bob.installation_id) == (inbox_id, installation_id)
        assert [m.text for m in await bob.conversation(dm.id).messages()] == ["one"]
        assert await texts_after_sync(bob, dm.id) == ["one", "two, while bob was away"]
        await bob.conversation(dm.id).send_text("three")
        assert await texts_after_sync(alice, dm.id) == ["one", "two, while bob was away", "three"]


class TestSecondInstallation:
    async def test_a_wallets_second_installation_gets_new_conversations_and_can_send(
            self, make_client: MakeClient) -> None:
        wallet = secrets.token_bytes(32)
        phone = await make_client(private_key=wallet)
        bob = await make_client()
        dm = await bob.new_dm(phone.address)
        await dm.send_text("before the laptop existed")
        assert await texts_after_sync(phone, dm.id) == ["before the laptop existed"]

        laptop = await make_client(private_key=wallet)
        assert laptop.inbox_id == phone.inbox_id
        assert laptop.installation_id != phone.installation_id
        # Existing groups take a new installation in on libxmtp's periodic installation
        # check (minutes); conversations created from now on include it at once.
        group = await bob.new_group([phone.address])
        await group.send_text("to both installations")
        assert await texts_after_sync(laptop, group.id) == ["to both installations"]
        assert await texts_after_sync(phone, group.id) == ["to both installations"]
        await laptop.conversation(group.id).send_text("from the laptop")
        everything = ["to both installations", "from the laptop"]
        assert await texts_after_sync(phone, group.id) == everything
        assert await texts_after_sync(bob, group.id) == everything
