"""XMTP's write budget as the chat channel keeps to it, driven through the relay and the
engine over a real SQLite store and a chat network that counts writes the way XMTP's
node does (a rolling window per client, refusing past its limit): a burst over the
budget goes out whole, in order, and no window holds more than the budget; a refusal
(the budget set above the node's limit) is retried and pauses the identity, never a
failed delivery. Real time, scaled down to a fraction of a second."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.delivery import Pacer, PacingSettings, WindowSettings
from gateway.domain.ids import WalletAddress
from gateway.domain.models import Channel, DeliveryState
from gateway.errors import ChatNetworkError
from gateway.metrics import Metrics
from gateway.testing.chat_fake import RecordingChatNetwork
from gateway.xmtp.budget import PacedChatNetwork, RefusalWatch, WriteBudgetSpent
from tests.delivery.world import FAST, WALLET, World, world

WINDOW = 0.6  # seconds
# libxmtp's words when the node refused a publish for the client's rate
LIBXMTP_GAVE_UP = "send text: [GroupError::SyncFailedToWait] Group error: Sync failed to wait"


class RateLimitedNode(RecordingChatNetwork):
    """The recording chat network, counting each write when it is made and refusing,
    as XMTP's node does, one that would put more than ``limit`` in a rolling window.
    A refusal is worded as libxmtp words it (no status in the error); ``refusals``
    stands for the lines libxmtp logs with the status."""

    def __init__(self, limit: int, window: float) -> None:
        super().__init__(reachable={WALLET})
        self.limit = limit
        self.window = window
        self.writes: list[float] = []  # when each write reached the node
        self.refusals = 0

    def _write(self, cost: int) -> None:
        now = asyncio.get_running_loop().time()
        recent = [t for t in self.writes if t > now - self.window]
        if len(recent) + cost > self.limit:
            self.refusals += 1
            raise ChatNetworkError(LIBXMTP_GAVE_UP)
        self.writes += [now] * cost

    async def create_group(self, *, name: str, members: Sequence[WalletAddress],
                           key: str | None = None) -> str:
        self._write(1 + len(members))
        return await super().create_group(name=name, members=members, key=key)

    async def send(self, group_id: str, text: str, *, key: str | None = None) -> str:
        self._write(1)
        return await super().send(group_id, text, key=key)

    async def rename_group(self, group_id: str, name: str) -> None:
        self._write(1)
        await super().rename_group(group_id, name)

    def most_in_a_window(self) -> int:
        return max((sum(1 for u in self.writes if t - self.window < u <= t)
                    for t in self.writes), default=0)


def budgeted(w: World, node: RateLimitedNode, *, budget: int) -> None:
    """The world's chat engine paced by a rolling-window budget of ``budget`` writes, of
    which it uses nine tenths (the headroom absorbs a write that reaches the node a
    little later than its turn, as the gateway's does)."""
    w.chat = node
    w.chat_settings = replace(FAST, pacing=PacingSettings(
        window=WindowSettings(budget, WINDOW, headroom=0.1)))
    w.chat_options = {"refusals": lambda: node.refusals, "refusal_pause": WINDOW / 3}


async def phone_burst(w: World, count: int) -> list[str]:
    texts = [f"text {n}" for n in range(count)]
    for text in texts:
        await w.phone_says(text)
    return texts


class TestABurstOverTheBudget:
    async def test_goes_out_whole_and_in_order_with_no_window_over_the_budget(
            self, tmp_path: Path) -> None:
        node = RateLimitedNode(limit=6, window=WINDOW)
        async with world("sqlite", tmp_path) as w:
            budgeted(w, node, budget=6)
            await w.start()
            began = asyncio.get_running_loop().time()
            texts = await phone_burst(w, 20)
            await w.settled(Channel.XMTP, within=20)
            took = asyncio.get_running_loop().time() - began
            deliveries = await w.deliveries(Channel.XMTP)
        assert w.posts() == texts  # each once, in order
        assert {d.state for d in deliveries} == {DeliveryState.SENT}
        assert node.refusals == 0
        assert node.most_in_a_window() <= 6  # the node's limit (a turn taken late: the headroom)
        # 22 writes (the group's two, then 20 posts), 5 per window: four windows waited
        assert len(node.writes) == 22
        assert took >= 4 * WINDOW

    async def test_a_refusal_is_retried_until_the_post_goes_never_failed(
            self, tmp_path: Path) -> None:
        # the budget set above what the node allows: the node refuses, the engine retries
        node = RateLimitedNode(limit=4, window=WINDOW)
        async with world("sqlite", tmp_path) as w:
            budgeted(w, node, budget=12)
            await w.start()
            texts = await phone_burst(w, 16)
            await w.settled(Channel.XMTP, within=30)
            deliveries = await w.deliveries(Channel.XMTP)
        assert node.refusals > 0
        assert w.posts() == texts
        assert {d.state for d in deliveries} == {DeliveryState.SENT}
        assert max(d.attempts for d in deliveries) > 1


class TestTheChannelsTurns:
    async def test_a_group_made_at_first_post_takes_its_writes_from_the_budget(
            self, tmp_path: Path) -> None:
        node = RateLimitedNode(limit=100, window=WINDOW)
        async with world("sqlite", tmp_path) as w:
            budgeted(w, node, budget=100)
            w.chat_pacer = Pacer(w.chat_settings.pacing)  # shared, as the app shares it
            await w.start()
            await phone_burst(w, 3)
            await w.settled(Channel.XMTP)
        # the group (its commit, one welcome) and three posts
        assert w.chat_pacer.windows()["xmtp"].used() == 5


class TestLongerThanOneLease:
    async def test_a_post_whose_calls_outlast_the_lease_extends_it_and_goes(
            self, tmp_path: Path) -> None:
        # a first post makes the group and posts: two calls of up to 2 s and a 1 s margin
        # need 5 s, more than the 4.5 s lease; it must go (the lease extended), not be
        # handed back and claimed again for ever
        node = RateLimitedNode(limit=100, window=WINDOW)
        async with world("sqlite", tmp_path) as w:
            budgeted(w, node, budget=100)
            w.chat_settings = replace(w.chat_settings, lease=4.5)
            await w.start()
            texts = await phone_burst(w, 3)
            await w.settled(Channel.XMTP, within=10)
            deliveries = await w.deliveries(Channel.XMTP)
        assert w.posts() == texts
        assert {d.state for d in deliveries} == {DeliveryState.SENT}
        assert [d.attempts for d in deliveries] == [1, 1, 1]


def paced(node: RecordingChatNetwork, limit: int, *, max_wait: float = 5.0,
          refusals: RefusalWatch | None = None) -> tuple[PacedChatNetwork, Pacer]:
    pacer = Pacer(PacingSettings(window=WindowSettings(limit, WINDOW, headroom=0.0)))
    return PacedChatNetwork(node, pacer, "0xgateway", max_wait=max_wait,
                            refusals=refusals, refusal_pause=WINDOW), pacer


class TestOtherWrites:
    """The API's group changes, and chat requests other processes ask of this one."""

    async def test_group_changes_take_their_turns_in_the_same_budget(self) -> None:
        node = RateLimitedNode(limit=3, window=WINDOW)
        network, pacer = paced(node, 3)
        group = await network.create_group(name="g", members=[WALLET])  # 2 writes
        began = asyncio.get_running_loop().time()
        await network.rename_group(group, "h")  # the third
        await network.rename_group(group, "i")  # waits for the window
        assert asyncio.get_running_loop().time() - began >= WINDOW * 0.9
        assert node.refusals == 0
        assert pacer.windows()["0xgateway"].delayed == 1

    async def test_a_change_whose_turn_is_too_far_off_is_not_made(self) -> None:
        node = RateLimitedNode(limit=100, window=WINDOW)
        network, pacer = paced(node, 2, max_wait=WINDOW / 2)
        group = await network.create_group(name="g", members=[WALLET])
        with pytest.raises(WriteBudgetSpent):
            await network.rename_group(group, "h")
        assert pacer.windows()["0xgateway"].used() == 2  # its turn given back
        assert node.groups[group].name == "g"

    async def test_a_refusal_libxmtp_logs_pauses_the_identity(self) -> None:
        node = RateLimitedNode(limit=1, window=WINDOW)  # the node allows less than us
        watch = RefusalWatch()
        network, pacer = paced(node, 10, refusals=watch)
        group = await network.create_group(name="g", members=[])  # 1 write: all of it

        async def refused() -> None:
            logging.getLogger("libxmtp.xmtp_mls.groups.mls_sync").error(
                'Sync: error publishing intents ... Status { code: ResourceExhausted, '
                'message: "1 exceeds rate limit Ripv4:127.0.0.1:43168PUB" }')

        watch.attach()
        try:
            node_rename = node.rename_group

            async def rename(group_id: str, name: str) -> None:
                try:
                    await node_rename(group_id, name)
                except ChatNetworkError:
                    await refused()
                    raise

            node.rename_group = rename  # type: ignore[method-assign]
            with pytest.raises(ChatNetworkError):
                await network.rename_group(group, "h")
        finally:
            watch.detach()
        assert watch.seen == 1
        assert pacer.windows()["0xgateway"].paused_for() > WINDOW / 2


class TestMetrics:
    async def test_the_budget_and_the_refusals_are_exposed(self) -> None:
        metrics = Metrics()
        pacer = Pacer(PacingSettings(window=WindowSettings(3, 300.0, headroom=0.0)))
        metrics.watch_write_budget(pacer)
        budget = pacer.bucket("0xAbC")
        assert budget is not None
        for _ in range(4):
            budget.reserve()
        watch = RefusalWatch(metrics.xmtp_rate_limited.inc)
        watch.emit(logging.makeLogRecord({"msg": "code: ResourceExhausted, ..."}))
        watch.emit(logging.makeLogRecord({"msg": "something else"}))
        text = metrics.render().decode()
        assert 'gateway_xmtp_write_budget_used{identity="0xAbC"} 3.0' in text
        assert 'gateway_xmtp_write_budget_limit{identity="0xAbC"} 3.0' in text
        assert 'gateway_xmtp_writes_delayed_total{identity="0xAbC"} 1.0' in text
        assert "gateway_xmtp_rate_limited_total 1.0" in text
