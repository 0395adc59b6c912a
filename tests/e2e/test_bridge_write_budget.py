"""XMTP's write budget end to end: a ``gateway serve`` process against a devnode process
that enforces XMTP's per-client write limit, scaled down (20 writes per rolling 6 s
instead of 3,000 per 300 s), a phone's burst of texts at twice that, and a real libxmtp
wallet reading its group.

Paced by a budget that matches the node's limit, the burst arrives whole, in order, once
each, with no refusal from the node and no failed delivery. Set above the node's limit
(a budget misconfigured, or another writer on the same client), the node refuses, and
every refused post is retried until it goes: still whole, in order, none failed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.bridge.harness import Bridge, running_bridge

pytestmark = pytest.mark.e2e

SUPPORT = "+15550100001"
PHONE = "+15551230001"
LIMIT, WINDOW = 20, 6.0  # the devnode's write limit per rolling window (seconds)
BURST = 2 * LIMIT


def scaled_down(budget: int) -> dict[str, Any]:
    return {"write_budget": {"writes": budget, "window_seconds": WINDOW, "headroom": 0.1},
            "retry": {"base_delay_seconds": 0.2, "max_delay_seconds": 2.0}}


def support(_wallets: dict[str, str]) -> list[dict[str, Any]]:
    return [{"name": "support", "proxy": SUPPORT, "channels": ["sms"], "mode": "fixed",
             "wallets": ["agent"]}]


async def burst_arrives_whole(bridge: Bridge, within: float) -> float:
    """Texts the burst back to back; returns how long until the wallet had all of it,
    after checking it has each text once, in order."""
    agent = bridge.wallets["agent"]
    texts = [f"burst {n}" for n in range(BURST)]
    began = time.monotonic()
    for text in texts:
        await bridge.phones.text(PHONE, SUPPORT, text)
    group = await agent.group_named("SMS · +1 555-123-0001", within=within)
    arrived = await agent.wait_for_texts(
        group, lambda seen: len([t for t in seen if t.startswith("burst ")]) >= BURST,
        within=within)
    took = time.monotonic() - began
    assert [t for t in arrived if t.startswith("burst ")] == texts
    return took


class TestTheWriteBudget:
    async def test_a_burst_over_the_nodes_limit_is_paced_and_delivered_whole(
            self, tmp_path: Path) -> None:
        async with running_bridge(
                tmp_path, wallets=["agent"], rules=support,
                devnode_args=["--max-writes", str(LIMIT), "--rate-window", str(WINDOW)],
                xmtp=scaled_down(LIMIT)) as bridge:
            took = await burst_arrives_whole(bridge, within=60)
            # 42 writes (the group's two, then 40 posts), 18 per window: two windows waited
            assert took >= 2 * WINDOW * 0.9
            await bridge.wait_for_metric("gateway_deliveries_total", BURST, channel="xmtp",
                                         state="sent")
            assert await bridge.metric("gateway_deliveries_total", state="failed") == 0
            assert await bridge.metric("gateway_xmtp_rate_limited_total") == 0
            assert await bridge.metric("gateway_xmtp_writes_delayed_total") > 0

    async def test_posts_the_node_refuses_are_retried_until_they_go(
            self, tmp_path: Path) -> None:
        async with running_bridge(
                tmp_path, wallets=["agent"], rules=support,
                devnode_args=["--max-writes", str(LIMIT), "--rate-window", str(WINDOW)],
                xmtp=scaled_down(10 * LIMIT)) as bridge:  # above what the node allows
            await burst_arrives_whole(bridge, within=90)
            await bridge.wait_for_metric("gateway_deliveries_total", BURST, channel="xmtp",
                                         state="sent")
            assert await bridge.metric("gateway_deliveries_total", state="failed") == 0
            assert await bridge.metric("gateway_xmtp_rate_limited_total") > 0
