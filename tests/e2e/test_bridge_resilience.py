"""Volume, order and recovery end to end: 100 messages each way, the gateway SIGKILLed
while a wallet keeps sending, the XMTP node restarted under a running gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.bridge.harness import Bridge, running_bridge

pytestmark = pytest.mark.e2e

SUPPORT = "+15550100001"
PHONE = "+15551230001"
GROUP = "SMS · +1 555-123-0001"
LABEL = "agent: "


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Bridge]:
    async with running_bridge(tmp_path, wallets=["agent"], rules=lambda w: [
        {"name": "support", "proxy": SUPPORT, "channels": ["sms"], "mode": "fixed",
         "wallets": ["agent"]},
    ]) as bridge:
        yield bridge


async def opened(bridge: Bridge):  # type: ignore[no-untyped-def]
    """The phone opens the conversation; returns the wallet's group."""
    agent = bridge.wallets["agent"]
    await bridge.phones.text(PHONE, SUPPORT, "hello")
    group = await agent.group_named(GROUP)
    await agent.wait_for_texts(group, lambda texts: texts == ["hello"])
    return group


def replies(bodies: list[str]) -> list[str]:
    return [b.removeprefix(LABEL) for b in bodies if b.startswith(LABEL)]


class TestVolume:
    async def test_a_hundred_messages_each_way_arrive_in_order_none_lost_or_doubled(
            self, bridge: Bridge) -> None:
        agent = bridge.wallets["agent"]
        group = await opened(bridge)
        sent_by_phone = [f"p{i:03d}" for i in range(100)]
        for body in sent_by_phone:
            await bridge.phones.text(PHONE, SUPPORT, body)
        sent_by_wallet = [f"w{i:03d}" for i in range(100)]
        for body in sent_by_wallet:
            await group.send_text(body)

        texts = await agent.wait_for_texts(group, lambda t: len(t) >= 201, within=60)
        assert [t for t in texts if t.startswith("p")] == sent_by_phone
        bodies = await bridge.phones.wait_for(PHONE, lambda b: len(replies(b)) >= 100,
                                              within=60)
        assert replies(bodies) == sent_by_wallet


class TestGatewayKilled:
    async def test_every_message_sent_around_a_sigkill_reaches_the_phone_exactly_once(
            self, bridge: Bridge) -> None:
        group = await opened(bridge)
        sent: list[str] = []

        async def keep_sending() -> None:
            for i in range(60):
                body = f"k{i:03d}"
                await group.send_text(body)
                sent.append(body)
                await asyncio.sleep(0.03)

        sender = asyncio.create_task(keep_sending())
        await bridge.phones.wait_for(PHONE, lambda b: len(replies(b)) >= 10, within=20)
        bridge.gateway.kill()
        await asyncio.sleep(0.5)
        await bridge.start_gateway()
        await asyncio.wait_for(sender, 30)

        bodies = await bridge.phones.wait_for(PHONE, lambda b: len(replies(b)) >= 60,
                                              within=60)
        assert sorted(replies(bodies)) == sorted(sent)  # each once: no loss, no repeat
        assert len(replies(bodies)) == 60


class TestNodeRestarted:
    async def test_the_gateways_stream_recovers_by_itself(self, bridge: Bridge) -> None:
        agent = bridge.wallets["agent"]
        group = await opened(bridge)
        await group.send_text("before")
        await bridge.phones.wait_for(PHONE, lambda b: replies(b) == ["before"])

        bridge.devnode.stop()
        await asyncio.sleep(1.0)
        await bridge.start_devnode()

        await group.send_text("after")
        bodies = await bridge.phones.wait_for(PHONE, lambda b: "after" in replies(b),
                                              within=60)
        assert replies(bodies) == ["before", "after"]
        await bridge.phones.text(PHONE, SUPPORT, "phone after")
        await agent.wait_for_texts(group, lambda t: "phone after" in t, within=30)
        assert await bridge.metric("gateway_chat_stream_failures_total") >= 1
