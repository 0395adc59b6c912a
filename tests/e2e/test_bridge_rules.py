"""Dial mode, a team rule, delivery failures, media and non-text content end to end:
``gateway serve``, the devnode and the Twilio simulator as processes, real libxmtp
wallets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import xmtp_bindings as xb
from eth_utils.address import to_checksum_address

from gateway.domain.rules import short_address
from gateway.xmtp.client import Consent
from tests.e2e.bridge.harness import Bridge, running_bridge

pytestmark = pytest.mark.e2e

SUPPORT = "+15550100001"
TEAM = "+15550100003"
DIAL = "+15550100002"
PHONE = "+15551230001"
GROUP = "SMS · +1 555-123-0001"
MIXED = "+15550100004"
STRANGER = to_checksum_address("0x" + "ab" * 20)  # a wallet that is not on XMTP


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Bridge]:
    async with running_bridge(tmp_path, wallets=["ann", "ben", "cat"], rules=lambda w: [
        {"name": "support", "proxy": SUPPORT, "channels": ["sms"], "mode": "fixed",
         "wallets": ["ann"]},
        {"name": "dial", "proxy": DIAL, "channels": ["sms"], "mode": "dial"},
        {"name": "team", "proxy": TEAM, "channels": ["sms"], "mode": "fixed",
         "wallets": ["ann", "ben", "cat"]},
        {"name": "mixed", "proxy": MIXED, "channels": ["sms"], "mode": "fixed",
         "wallets": ["ann", STRANGER]},
    ]) as bridge:
        yield bridge


def contains(text: str):  # type: ignore[no-untyped-def]
    return lambda texts: any(text in t for t in texts)


class TestDialMode:
    async def test_the_named_wallet_gets_the_text_later_texts_stay_and_naming_another_switches(
            self, bridge: Bridge) -> None:
        ann, ben = bridge.wallets["ann"], bridge.wallets["ben"]
        await bridge.phones.text(PHONE, DIAL, f"{ann.address} hi there")
        ann_group = await ann.group_named(GROUP)
        await ann.wait_for_texts(ann_group, lambda texts: texts == ["hi there"])

        await bridge.phones.text(PHONE, DIAL, "still me")
        await ann.wait_for_texts(ann_group, lambda texts: texts == ["hi there", "still me"])

        await bridge.phones.text(PHONE, DIAL, "ben: now you")
        ben_group = await ben.group_named(GROUP)
        await ben.wait_for_texts(ben_group, lambda texts: texts == ["now you"])
        await ben_group.send_text("ben here")
        await bridge.phones.wait_for(PHONE, contains("ben here"))
        assert "now you" not in await ann.wait_for_texts(ann_group, lambda _: True)


class TestTeamRule:
    async def test_every_wallet_sees_the_text_and_each_others_replies_and_the_phone_gets_each(
            self, bridge: Bridge) -> None:
        ann, ben, cat = (bridge.wallets[n] for n in ("ann", "ben", "cat"))
        await bridge.phones.text(PHONE, TEAM, "anyone there?")
        groups = {name: await w.group_named(GROUP)
                  for name, w in (("ann", ann), ("ben", ben), ("cat", cat))}
        assert len({g.id for g in groups.values()}) == 1  # one group, three wallets in it
        for name, wallet in (("ann", ann), ("ben", ben), ("cat", cat)):
            await wallet.wait_for_texts(groups[name], contains("anyone there?"))

        await groups["ann"].send_text("ann: yes")
        await groups["ben"].send_text("ben: me too")
        await cat.wait_for_texts(groups["cat"], lambda t: "ann: yes" in t and "ben: me too" in t)

        bodies = await bridge.phones.wait_for(
            PHONE, lambda b: contains("ann: yes")(b) and contains("ben: me too")(b))
        assert "ann: ann: yes" in bodies  # the rule's sender label: the wallet's alias
        assert "ben: ben: me too" in bodies


class TestDeliveryFailures:
    async def test_a_failed_text_is_reported_into_the_wallets_group(self, bridge: Bridge) -> None:
        ann = bridge.wallets["ann"]
        await bridge.phones.text(PHONE, SUPPORT, "hello")
        group = await ann.group_named(GROUP)
        await ann.wait_for_texts(group, contains("hello"))
        await bridge.phones.fault(kind="reject", code=21211, to=PHONE)

        await group.send_text("this one fails")
        await ann.wait_for_texts(group, contains("Not delivered to +1 555-123-0001"))

    async def test_stop_is_reported_into_the_group_and_start_lets_texts_through_again(
            self, bridge: Bridge) -> None:
        ann = bridge.wallets["ann"]
        await bridge.phones.text(PHONE, SUPPORT, "hello")
        group = await ann.group_named(GROUP)
        await ann.wait_for_texts(group, contains("hello"))

        await bridge.phones.text(PHONE, SUPPORT, "STOP")
        await ann.wait_for_texts(group, contains("replied STOP"))
        await group.send_text("while stopped")
        await bridge.wait_for_metric("gateway_inbound_messages_total", 1, channel="xmtp")
        await bridge.phones.text(PHONE, SUPPORT, "START")
        await ann.wait_for_texts(group, contains("replied START"))
        await group.send_text("after start")
        bodies = await bridge.phones.wait_for(PHONE, contains("after start"))
        assert not contains("while stopped")(bodies)


class TestContent:
    async def test_a_file_of_a_type_not_carried_is_reported_to_the_phone(
            self, bridge: Bridge) -> None:
        ann = bridge.wallets["ann"]
        await bridge.phones.text_with_files(PHONE, SUPPORT, "see attached",
                                            [(b"MZ" + bytes(100), "application/x-msdownload")])
        group = await ann.group_named(GROUP)
        await ann.wait_for_texts(group, contains("see attached"))
        bodies = await bridge.phones.wait_for(PHONE, contains("Not delivered to the wallet"))
        assert any("application/x-msdownload files are not carried" in b for b in bodies)

    async def test_a_reaction_reaches_the_phone_as_text_naming_what_it_is_on(
            self, bridge: Bridge) -> None:
        ann = bridge.wallets["ann"]
        await bridge.phones.text(PHONE, SUPPORT, "see you at 5")
        group = await ann.group_named(GROUP)
        await ann.wait_for_texts(group, contains("see you at 5"))
        posted = next(m for m in await ann.texts(group) if m.text == "see you at 5")
        reaction = xb.encode_reaction(xb.FfiReactionPayload(
            reference=posted.id, reference_inbox_id=posted.sender_inbox_id,
            action=xb.FfiReactionAction.ADDED, content="👍",
            schema=xb.FfiReactionSchema.UNICODE))
        await group.send_encoded(reaction)

        bodies = await bridge.phones.wait_for(PHONE, contains("👍"))
        assert bodies[-1].endswith('👍 to "see you at 5"')


class TestUnreachableWallet:
    async def test_a_dialled_wallet_not_on_xmtp_is_refused_and_the_phone_told(
            self, bridge: Bridge) -> None:
        await bridge.phones.text(PHONE, DIAL, f"{STRANGER} hello?")
        bodies = await bridge.phones.wait_for(PHONE, contains("is not on XMTP"))
        assert any(short_address(STRANGER) in b for b in bodies)

    async def test_a_team_wallet_not_on_xmtp_is_left_out_and_the_others_carry_on(
            self, bridge: Bridge) -> None:
        ann = bridge.wallets["ann"]
        await bridge.phones.text(PHONE, MIXED, "is anyone there?")
        group = await ann.group_named(GROUP)
        await ann.wait_for_texts(group, lambda t: "is anyone there?" in t
                                 and contains("left out of this conversation")(t))
        bodies = await bridge.phones.wait_for(PHONE, contains("not on XMTP"))
        assert any(short_address(STRANGER) in b for b in bodies)
        await group.send_text("ann here")
        await bridge.phones.wait_for(PHONE, contains("ann here"))


class TestConsent:
    async def test_a_wallet_that_blocks_and_leaves_stops_the_relay_and_the_phone_is_told_once(
            self, bridge: Bridge) -> None:
        ann = bridge.wallets["ann"]
        await bridge.phones.text(PHONE, SUPPORT, "hello")
        group = await ann.group_named(GROUP)
        await ann.wait_for_texts(group, contains("hello"))
        posted = await bridge.metric("gateway_deliveries_total", channel="xmtp", state="sent")

        await ann.client.set_conversation_consent(group.id, Consent.DENIED)
        await group.leave()
        bodies = await bridge.phones.wait_for(PHONE, contains("has left this conversation"))
        await bridge.phones.text(PHONE, SUPPORT, "are you there?")
        await bridge.wait_for_metric("gateway_inbound_messages_total", 2, channel="sms")

        assert await bridge.metric("gateway_deliveries_total", channel="xmtp",
                                   state="sent") == posted
        bridge.gateway.stop()
        await bridge.start_gateway()  # the catch-up sees the leave request again
        await bridge.wait_for_metric("gateway_inbound_messages_total", 1, channel="xmtp",
                                     outcome="duplicate")
        await bridge.phones.text(PHONE, SUPPORT, "hello again")
        await bridge.wait_for_metric("gateway_inbound_messages_total", 1, channel="sms")
        bodies = [m["body"] for m in await bridge.phones.inbox(PHONE)]
        assert len([b for b in bodies if "has left this conversation" in b]) == 1
