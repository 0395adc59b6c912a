"""API-created conversations bridge like rule-created ones, on the whole gateway: the real
app, the Twilio simulator behind the real twilio library, the outbox workers, and a
recording chat network in place of XMTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.client import GatewayClient
from gateway.domain.ids import PhoneNumber
from gateway.domain.models import Channel
from gateway.domain.policy import REFUSED_NEVER_TEXTED_IN
from gateway.domain.ports import NewParticipant
from tests.integration.bridge_harness import (
    ALICE,
    BOB,
    DIAL,
    PHONE,
    PHONE_2,
    SUPPORT,
    Bridge,
    eventually,
    running_bridge,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TOKEN = "bridge-api-token-eeeeeeeeeeee"


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Bridge]:
    async with running_bridge(tmp_path, api={"tokens": [TOKEN]}) as bridge:
        yield bridge


@pytest.fixture
async def client(bridge: Bridge) -> AsyncIterator[GatewayClient]:
    async with GatewayClient(bridge.url, TOKEN) as c:
        yield c


async def phone_texted_in(bridge: Bridge, client: GatewayClient) -> None:
    """The phone texts our number first (as SMS-pumping protection requires before we
    text it), which opens the rule's conversation; the operator closes that one."""
    await bridge.text(PHONE, SUPPORT, "hello?")
    rule_conversation = await eventually(
        lambda: next(iter(bridge.chat.groups.values()), None))
    async for conversation in client.conversations.list():
        if conversation.xmtp_group_id == rule_conversation.id:
            await conversation.close()


class TestApiConversationsBridge:
    async def test_an_api_message_reaches_the_phone_by_sms_and_the_wallet_in_its_group(
            self, bridge: Bridge, client: GatewayClient) -> None:
        await phone_texted_in(bridge, client)
        conversation = await client.conversations.create(friendly_name="Escalation")
        await conversation.add_participant(BOB)
        await conversation.add_participant(address=PHONE, proxy_address=SUPPORT)
        sent = await conversation.send("We are on it.")
        received = await bridge.sim.wait_for_inbox(PHONE, 1, within=10)
        assert [(r.from_, r.body) for r in received] == [(SUPPORT, "We are on it.")]
        group = conversation.xmtp_group_id
        assert group is not None and BOB in bridge.chat.groups[group].members
        await eventually(lambda: "We are on it." in bridge.sent_to(group), within=10)

        async def receipts() -> Any:
            message = await conversation.message(sent.id)
            return message.receipts and all(r.state != "pending" for r in message.receipts)
        for _ in range(200):
            if await receipts():
                break
            await asyncio.sleep(0.05)
        assert await receipts()

    async def test_the_phone_s_next_texts_land_in_the_api_conversation(
            self, bridge: Bridge, client: GatewayClient) -> None:
        await phone_texted_in(bridge, client)
        conversation = await client.conversations.create()
        await conversation.add_participant(BOB)
        await conversation.add_participant(address=PHONE, proxy_address=SUPPORT)
        stream = client.stream_messages(conversation_id=conversation.id).start()
        await asyncio.wait_for(stream.connected.wait(), 5)
        await bridge.text(PHONE, SUPPORT, "thanks!")
        group = conversation.xmtp_group_id
        assert group is not None
        await eventually(lambda: "thanks!" in bridge.sent_to(group), within=10)
        message = await asyncio.wait_for(anext(aiter(stream)), 10)
        await stream.close()
        assert message.body == "thanks!" and message.source == "sms"
        # and the wallet's reply in that group reaches the phone
        bridge.wallet_says(group, BOB, "you're welcome")
        received = await bridge.sim.wait_for_inbox(PHONE, 1, within=10)
        assert received[-1].body.endswith("you're welcome")

    async def test_a_text_on_a_number_and_channel_no_rule_serves_reaches_its_conversation(
            self, bridge: Bridge) -> None:
        # the phone is in a conversation through DIAL on WhatsApp, which no rule serves
        # (the API made it, or the rule lost that channel since)
        async with bridge.store.transaction() as tx:
            conversation = await tx.create_conversation(rule=None, now=datetime.now(UTC))
            await tx.add_participant(NewParticipant(conversation.id, Channel.XMTP,
                                                    identity=BOB), now=datetime.now(UTC))
            await tx.add_participant(NewParticipant(
                conversation.id, Channel.WHATSAPP, address=PhoneNumber(PHONE),
                proxy_address=PhoneNumber(DIAL)), now=datetime.now(UTC))
        result = await bridge.text(PHONE, DIAL, "over whatsapp", channel="whatsapp")
        assert result.status == 200
        group = await eventually(lambda: bridge.group_of(BOB) if bridge.chat.groups else None)
        await eventually(lambda: "over whatsapp" in bridge.sent_to(group))
        bridge.wallet_says(group, BOB, "got it")
        received = await bridge.sim.wait_for_inbox(PHONE, 1, within=10)
        assert received[-1].body.endswith("got it")

    async def test_a_phone_that_never_texted_in_is_not_texted(
            self, bridge: Bridge, client: GatewayClient) -> None:
        conversation = await client.conversations.create()
        await conversation.add_participant(ALICE)
        await conversation.add_participant(address=PHONE_2, proxy_address=SUPPORT)
        sent = await conversation.send("unsolicited")

        async def refused() -> bool:
            message = await conversation.message(sent.id)
            states = {r.channel: (r.state, r.error_code) for r in message.receipts or ()}
            return states.get("sms") == ("failed", REFUSED_NEVER_TEXTED_IN)
        for _ in range(200):
            if await refused():
                break
            await asyncio.sleep(0.05)
        assert await refused()
        assert bridge.sim.inbox(PHONE_2) == []

    async def test_status_callbacks_show_up_as_delivery_events(
            self, bridge: Bridge, client: GatewayClient) -> None:
        await phone_texted_in(bridge, client)
        conversation = await client.conversations.create()
        phone = await conversation.add_participant(address=PHONE, proxy_address=SUPPORT)
        async with client.stream(conversation_id=conversation.id,
                                 types=("delivery.updated",)) as stream:
            await asyncio.wait_for(stream.connected.wait(), 5)
            sent = await conversation.send("tracked")

            async def delivered() -> Any:
                async for event in stream:
                    if event.data.get("state") == "delivered":
                        return event
                return None
            settling = asyncio.ensure_future(delivered())
            for _ in range(250):
                if settling.done():
                    break
                await bridge.sim.settle()
                await asyncio.sleep(0.01)
            event = await asyncio.wait_for(settling, 10)
        assert event.data["message_id"] == sent.id
        assert event.data["participant_id"] == phone.id
        assert event.data["delivery"]["channel"] == "sms"
