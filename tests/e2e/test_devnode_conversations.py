"""Real libxmtp clients talking through the devnode on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gateway.errors import WalletNotReachable
from gateway.xmtp.client import (
    TEXT_CONTENT_TYPE,
    Consent,
    MessageStream,
    XmtpClient,
    XmtpMessage,
)

pytestmark = pytest.mark.e2e

MakeClient = Callable[..., Awaitable[XmtpClient]]  # the make_client fixture

STRANGER = "0x" + "5a" * 20  # a wallet that never registered


async def next_messages(stream: MessageStream, count: int, *, within: float = 10.0,
                        ) -> list[XmtpMessage]:
    """The next ``count`` messages with text (skipping membership changes)."""
    received: list[XmtpMessage] = []

    async def collect() -> None:
        async for message in stream:
            if message.text is not None:
                received.append(message)
                if len(received) == count:
                    return

    await asyncio.wait_for(collect(), within)
    return received


async def texts_after_sync(client: XmtpClient, conversation_id: str) -> list[str]:
    await client.sync_all()
    messages = await client.conversation(conversation_id).messages()
    return [m.text for m in messages if m.text is not None]


class TestRegistration:
    async def test_a_new_wallet_registers_and_others_can_find_its_inbox(
            self, make_client: MakeClient) -> None:
        alice = await make_client()
        bob = await make_client()
        assert len(alice.inbox_id) == 64
        assert await bob.inbox_id_of(alice.address) == alice.inbox_id
        assert await bob.inbox_id_of(alice.address.lower()) == alice.inbox_id
        assert await bob.can_message([alice.address, STRANGER]) == {
            alice.address: True, STRANGER: False}
        assert await bob.addresses_of([alice.inbox_id]) == {
            alice.inbox_id: [alice.address.lower()]}

    async def test_a_dm_with_a_wallet_not_on_xmtp_is_refused(
            self, make_client: MakeClient) -> None:
        alice = await make_client()
        with pytest.raises(WalletNotReachable):
            await alice.new_dm(STRANGER)


class TestDirectMessages:
    async def test_a_dm_carries_messages_both_ways(self, make_client: MakeClient) -> None:
        alice, bob = await make_client(), await make_client()
        dm = await alice.new_dm(bob.address)
        await dm.send_text("hi bob")
        assert await texts_after_sync(bob, dm.id) == ["hi bob"]
        [received] = await bob.conversation(dm.id).messages()
        assert (received.content_type, received.sender_inbox_id) == (
            TEXT_CONTENT_TYPE, alice.inbox_id)
        bob_dm = bob.conversation(dm.id)
        assert bob_dm.is_dm and bob_dm.dm_peer_inbox_id == alice.inbox_id
        await bob_dm.send_text("hi alice")
        assert await texts_after_sync(alice, dm.id) == ["hi bob", "hi alice"]

    async def test_a_peer_that_syncs_later_gets_everything_sent_meanwhile(
            self, make_client: MakeClient) -> None:
        alice, bob = await make_client(), await make_client()
        dm = await alice.new_dm(bob.address)
        sent = [f"offline {i}" for i in range(5)]
        for text in sent:
            await dm.send_text(text)
        assert await texts_after_sync(bob, dm.id) == sent
        messages = await bob.conversation(dm.id).messages()
        assert all(m.sender_inbox_id == alice.inbox_id for m in messages)
        assert [m.sent_at_ns for m in messages] == sorted(m.sent_at_ns for m in messages)


class TestGroups:
    async def test_a_group_of_three_adds_and_removes_members(
            self, make_client: MakeClient) -> None:
        alice, bob, carol, dave = [await make_client() for _ in range(4)]
        group = await alice.new_group([bob.address, carol.address], name="SMS · test")
        assert sorted(await group.member_inbox_ids()) == sorted(
            [alice.inbox_id, bob.inbox_id, carol.inbox_id])
        await group.send_text("hello all")
        for member in (bob, carol):
            assert await texts_after_sync(member, group.id) == ["hello all"]
            assert member.conversation(group.id).name == "SMS · test"
        await bob.conversation(group.id).send_text("bob here")

        await group.add_members([dave.address])
        await group.remove_members([carol.address])
        await group.send_text("after the change")

        assert await texts_after_sync(dave, group.id) == ["after the change"]
        assert await texts_after_sync(bob, group.id) == [
            "hello all", "bob here", "after the change"]
        assert await texts_after_sync(carol, group.id) == ["hello all", "bob here"]
        assert not carol.conversation(group.id).is_active
        assert sorted(await group.member_inbox_ids()) == sorted(
            [alice.inbox_id, bob.inbox_id, dave.inbox_id])


class TestStreaming:
    async def test_a_running_stream_receives_new_conversations_and_messages(
            self, make_client: MakeClient) -> None:
        alice, bob, carol = await make_client(), await make_client(), await make_client()
        async with await bob.stream_all_messages() as stream:
            dm = await alice.new_dm(bob.address)
            await dm.send_text("first in a new dm")
            [first] = await next_messages(stream, 1)
            assert (first.text, first.conversation_id) == ("first in a new dm", dm.id)
            assert first.sender_inbox_id == alice.inbox_id

            group = await carol.new_group([bob.address, alice.address])
            await group.send_text("first in a new group")
            await dm.send_text("second in the dm")
            got = await next_messages(stream, 2)
            assert {(m.conversation_id, m.text) for m in got} == {
                (group.id, "first in a new group"), (dm.id, "second in the dm")}

    async def test_a_hundred_messages_arrive_in_order_none_lost_or_doubled(
            self, make_client: MakeClient) -> None:
        alice, bob = await make_client(), await make_client()
        dm = await alice.new_dm(bob.address)
        await dm.send_text("warm-up")
        await bob.sync_all()
        async with await bob.stream_all_messages() as stream:
            sent = [f"message {i:03d}" for i in range(100)]
            for text in sent:
                await dm.send_text(text)
            received = await next_messages(stream, 100, within=60)
        assert [m.text for m in received] == sent
        assert len({m.id for m in received}) == 100
        assert await texts_after_sync(bob, dm.id) == ["warm-up", *sent]


class TestConsent:
    async def test_consent_for_an_inbox_and_a_conversation_changes_and_reads_back(
            self, make_client: MakeClient) -> None:
        alice, bob = await make_client(), await make_client()
        dm = await alice.new_dm(bob.address)
        await dm.send_text("may I?")
        await bob.sync_all()
        assert await bob.inbox_consent(alice.inbox_id) is Consent.UNKNOWN
        bob_dm = bob.conversation(dm.id)
        assert bob_dm.consent() is Consent.UNKNOWN

        await bob.set_inbox_consent(alice.inbox_id, Consent.DENIED)
        assert await bob.inbox_consent(alice.inbox_id) is Consent.DENIED
        await bob.set_conversation_consent(dm.id, Consent.ALLOWED)
        assert await bob.conversation_consent(dm.id) is Consent.ALLOWED
        assert bob.conversation(dm.id).consent() is Consent.ALLOWED
        bob_dm.set_consent(Consent.DENIED)
        assert await bob.conversation_consent(dm.id) is Consent.DENIED
        # alice's own view is untouched: she created the conversation, so she allows it
        assert dm.consent() is Consent.ALLOWED
