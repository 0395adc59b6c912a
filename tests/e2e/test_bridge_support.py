"""The support line end to end: a real ``gateway serve`` process between simulated phones
(Twilio simulator process) and real libxmtp wallets (devnode process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.bridge.harness import Bridge, running_bridge

pytestmark = pytest.mark.e2e

SUPPORT = "+15550100001"
ALICE_PHONE = "+15551230001"
BOB_PHONE = "+15551230002"


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Bridge]:
    async with running_bridge(tmp_path, wallets=["agent"], rules=lambda w: [
        {"name": "support", "proxy": SUPPORT, "channels": ["sms"], "mode": "fixed",
         "wallets": ["agent"]},
    ]) as bridge:
        yield bridge


class TestSupportLine:
    async def test_a_phones_text_reaches_the_wallet_and_the_reply_comes_back_by_sms(
            self, bridge: Bridge) -> None:
        agent = bridge.wallets["agent"]
        await bridge.phones.text(ALICE_PHONE, SUPPORT, "my order is late")

        group = await agent.group_named("SMS · +1 555-123-0001")
        await agent.wait_for_texts(group, lambda texts: "my order is late" in texts)
        await group.send_text("sorry! it ships today")

        received = await bridge.phones.inbox(ALICE_PHONE, count=1)
        assert [m["body"] for m in received][-1].endswith("sorry! it ships today")
        assert received[-1]["from"] == SUPPORT

    async def test_a_second_phone_gets_its_own_group(self, bridge: Bridge) -> None:
        agent = bridge.wallets["agent"]
        await bridge.phones.text(ALICE_PHONE, SUPPORT, "hello from alice")
        await bridge.phones.text(BOB_PHONE, SUPPORT, "hello from bob")

        alice_group = await agent.group_named("SMS · +1 555-123-0001")
        bob_group = await agent.group_named("SMS · +1 555-123-0002")
        assert alice_group.id != bob_group.id
        await agent.wait_for_texts(bob_group, lambda texts: texts == ["hello from bob"])
        await bob_group.send_text("hi bob")

        bodies = await bridge.phones.wait_for(BOB_PHONE, lambda b: any("hi bob" in x for x in b))
        assert not any("hi bob" in body
                       for body in [m["body"] for m in await bridge.phones.inbox(ALICE_PHONE)])
        assert len([b for b in bodies if "hi bob" in b]) == 1

    async def test_texts_racing_in_before_the_group_exists_make_one_group(
            self, bridge: Bridge) -> None:
        agent = bridge.wallets["agent"]
        texts = [f"burst {i}" for i in range(5)]
        for text in texts:  # back to back: the first is not posted before the rest arrive
            await bridge.phones.text(ALICE_PHONE, SUPPORT, text)

        group = await agent.group_named("SMS · +1 555-123-0001")
        assert await agent.wait_for_texts(group, lambda t: len(t) >= 5) == texts
        named = [g for g in await agent.groups() if g.name == group.name]
        assert len(named) == 1
