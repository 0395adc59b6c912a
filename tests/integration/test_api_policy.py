"""A phone added through the API is governed by its number's rule, as one the rule's own
conversation has: unsolicited texts, daily quotas, the WhatsApp window and its template.
On the whole gateway (real HTTP, the Twilio simulator behind the real twilio library),
on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.client import GatewayClient
from gateway.domain.policy import (
    REFUSED_NEVER_TEXTED_IN,
    REFUSED_PHONE_QUOTA,
    REFUSED_WHATSAPP_WINDOW,
)
from tests.delivery.world import fresh_postgres, until
from tests.fixtures.api_app import BACKENDS
from tests.integration.bridge_harness import (
    BOB,
    PHONE,
    PHONE_2,
    Bridge,
    running_bridge,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TOKEN = "api-policy-token-ffffffffffff"
OUTREACH = "+15550100004"  # texts phones first; two texts a day at most to each
QUIET = "+15550100005"  # the default: only phones that texted in
TEMPLATE = "HX" + "7" * 32
RULES = [
    {"name": "outreach", "proxy": OUTREACH, "channels": ["sms", "whatsapp"],
     "wallets": ["bob"],
     "outbound": {"allow_unsolicited": True, "per_phone_daily": 2,
                  "whatsapp_template": {"content_sid": TEMPLATE}}},
    {"name": "quiet", "proxy": QUIET, "channels": ["sms", "whatsapp"], "wallets": ["bob"]},
]


@pytest.fixture(params=BACKENDS)
async def bridge(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Bridge]:
    database = ({"url": await fresh_postgres("api_policy"), "active_key": "k1",
                 "encryption_keys": {"k1": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}}
                if request.param == "postgres" else None)
    async with running_bridge(tmp_path, api={"tokens": [TOKEN]}, rules=RULES,
                              **({"database": database} if database else {})) as bridge:
        yield bridge


@pytest.fixture
async def client(bridge: Bridge) -> AsyncIterator[GatewayClient]:
    async with GatewayClient(bridge.url, TOKEN) as c:
        yield c


async def receipts_settled(client: GatewayClient, conversation: Any, message_id: str) -> Any:
    async def settled() -> Any:
        message = await conversation.message(message_id)
        done = message.receipts and all(r.state not in ("pending", "sending", "unknown")
                                        for r in message.receipts)
        return message if done else None
    return await until(settled)


def phone_receipt(message: Any) -> Any:
    [receipt] = [r for r in message.receipts if r.channel in ("sms", "whatsapp")]
    return receipt


async def api_conversation(client: GatewayClient, proxy: str, *, phone: str = PHONE,
                           channel: str = "sms") -> Any:
    conversation = await client.conversations.create(friendly_name="From the API")
    await conversation.add_participant(BOB)
    await conversation.add_participant(address=phone, proxy_address=proxy, channel=channel)
    return conversation


class TestApiConversationsFollowTheirNumbersRule:
    async def test_a_rule_that_texts_first_lets_the_api_text_first(
            self, bridge: Bridge, client: GatewayClient) -> None:
        conversation = await api_conversation(client, OUTREACH)
        sent = await conversation.send("Your order shipped.")
        message = await receipts_settled(client, conversation, sent.id)
        assert phone_receipt(message).state in ("sent", "delivered")
        received = await bridge.sim.wait_for_inbox(PHONE, 1, within=10)
        assert [(r.from_, r.body) for r in received] == [(OUTREACH, "Your order shipped.")]

    async def test_the_default_rule_still_refuses_a_phone_that_never_texted_in(
            self, bridge: Bridge, client: GatewayClient) -> None:
        conversation = await api_conversation(client, QUIET)
        sent = await conversation.send("hello")
        receipt = phone_receipt(await receipts_settled(client, conversation, sent.id))
        assert (receipt.state, receipt.error_code) == ("failed", REFUSED_NEVER_TEXTED_IN)

    async def test_the_rules_daily_quota_counts_the_api_conversations_texts(
            self, bridge: Bridge, client: GatewayClient) -> None:
        conversation = await api_conversation(client, OUTREACH, phone=PHONE_2)
        states = []
        for n in range(3):
            sent = await conversation.send(f"update {n}")
            receipt = phone_receipt(await receipts_settled(client, conversation, sent.id))
            states.append((receipt.state, receipt.error_code))
        assert states[2] == ("failed", REFUSED_PHONE_QUOTA)
        assert [s for s, _ in states[:2]] != ["failed", "failed"]

    async def test_whatsapp_outside_the_window_takes_the_numbers_template(
            self, bridge: Bridge, client: GatewayClient) -> None:
        conversation = await api_conversation(client, OUTREACH, channel="whatsapp")
        sent = await conversation.send("We have news.")
        await receipts_settled(client, conversation, sent.id)
        [received] = await bridge.sim.wait_for_inbox(PHONE, 1, within=10)
        assert (received.channel, received.content_sid) == ("whatsapp", TEMPLATE)

    async def test_whatsapp_outside_the_window_without_a_template_is_refused(
            self, bridge: Bridge, client: GatewayClient) -> None:
        await bridge.text(PHONE, QUIET, "hi", channel="whatsapp")  # texted in...
        conversation = await api_conversation(client, QUIET, phone=PHONE_2,
                                              channel="whatsapp")  # ...another phone did not
        sent = await conversation.send("hello")
        receipt = phone_receipt(await receipts_settled(client, conversation, sent.id))
        assert receipt.error_code in (REFUSED_NEVER_TEXTED_IN, REFUSED_WHATSAPP_WINDOW)
