"""XMTP's write budget, as the gateway keeps to it.

XMTP's network counts each client's writes over a rolling window (3,000 per 300 s) and
answers 429 (gRPC ``RESOURCE_EXHAUSTED``) above it. Every write the gateway's XMTP
process makes is counted against one ``WindowBudget`` per gateway identity (the
``Pacer`` the chat outbox engine shares, keyed by the identity's wallet address):

- the chat outbox's posts and the groups it makes at a conversation's first post, through
  the engine's ``attempt.pace`` (``ChatChannel``): a post waits for its turn, or is
  handed back due when the identity has room, rather than holding its lease;
- everything else (the API's group changes, made here or asked of this process by
  another through chat requests) through ``PacedChatNetwork``, which waits for the turn
  before it calls libxmtp.

What a write costs, in the node's count (``gateway.xmtp.writes``): a post, a rename and
a removal are one; a group made or a wallet added is the commit and a welcome per wallet.

A refusal the node answers anyway (another writer on the same client, clocks that
disagree) is retried, never a failed delivery: libxmtp retries it for about 2.5 s itself,
then reports a generic failure; the chat channel retries the post with backoff (the same
prepared message). libxmtp's own log names the status (``ResourceExhausted``):
``RefusalWatch`` counts those lines (the ``gateway_xmtp_rate_limited`` metric) and lets
the channel pause the whole identity, not only the lane that met it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from gateway.config import XmtpConfig
from gateway.delivery.pacing import Pacer, PacingSettings, WindowSettings
from gateway.domain.ids import WalletAddress
from gateway.domain.ports import ChatMessage, ChatNetwork
from gateway.errors import ChatNetworkError
from gateway.xmtp.writes import group_writes, is_refusal

NATIVE_LOGGER = "libxmtp"  # gateway.xmtp.native_log's root logger


def budget_settings(xmtp: XmtpConfig) -> PacingSettings:
    """A rolling-window budget per XMTP client, as ``xmtp.write_budget`` says."""
    budget = xmtp.write_budget
    return PacingSettings(window=WindowSettings(budget.writes, budget.window_seconds,
                                                budget.headroom))


def refusal_pause(xmtp: XmtpConfig) -> float:
    """How long an identity stops writing after the node refused it: a thirtieth of the
    window (10 s on the network), for the window's oldest writes to age out."""
    return xmtp.write_budget.window_seconds / 30


class RefusalWatch(logging.Handler):
    """Counts the node's rate-limit refusals as libxmtp logs them (it does not say so in
    the error it raises). ``seen`` only grows; ``on_refusal`` is called per line."""

    def __init__(self, on_refusal: Callable[[], None] | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.seen = 0
        self._on_refusal = on_refusal

    def emit(self, record: logging.LogRecord) -> None:
        if is_refusal(record.getMessage()):
            self.seen += 1
            if self._on_refusal is not None:
                self._on_refusal()

    def attach(self) -> None:
        logging.getLogger(NATIVE_LOGGER).addHandler(self)

    def detach(self) -> None:
        logging.getLogger(NATIVE_LOGGER).removeHandler(self)


class WriteBudgetSpent(ChatNetworkError):
    """The identity's write budget has no room for this within the time it may wait."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"the XMTP write budget is spent for the next {wait:.0f}s")
        self.wait = wait


class PacedChatNetwork:
    """A chat network whose writes wait for their turn in the identity's write budget
    (``sender`` in ``pacer``) before they are made; reads pass through. The chat outbox's
    posts and groups are paced by its engine instead (``ChatChannel`` is given ``inner``).
    A write whose turn is further off than ``max_wait`` seconds is not made
    (``WriteBudgetSpent``: the API answers 502, as for any chat network error)."""

    def __init__(self, inner: ChatNetwork, pacer: Pacer, sender: str, *,
                 max_wait: float, refusals: RefusalWatch | None = None,
                 refusal_pause: float = 10.0) -> None:
        self.inner = inner
        self._pacer = pacer
        self._sender = sender
        self._max_wait = max_wait
        self._refusals = refusals
        self._refusal_pause = refusal_pause

    async def _paced(self, writes: int, call: Callable[[], Awaitable[str | None]]
                     ) -> str | None:
        budget = self._pacer.bucket(self._sender)
        if budget is None:
            return await call()
        waits = [budget.reserve() for _ in range(writes)]
        if waits[-1] > self._max_wait:
            for _ in waits:
                budget.cancel()
            raise WriteBudgetSpent(waits[-1])
        if waits[-1] > 0:
            await asyncio.sleep(waits[-1])
        while (paused := budget.paused_for()) > 0:
            if paused > self._max_wait:
                raise WriteBudgetSpent(paused)
            await asyncio.sleep(paused)
        before = self._refusals.seen if self._refusals is not None else 0
        try:
            return await call()
        except ChatNetworkError as exc:
            if is_refusal(str(exc)) or (self._refusals is not None
                                        and self._refusals.seen > before):
                budget.pause(self._refusal_pause)
            raise

    async def is_reachable(self, wallet: WalletAddress) -> bool:
        return await self.inner.is_reachable(wallet)

    async def create_group(self, *, name: str, members: Sequence[WalletAddress],
                           key: str | None = None) -> str:
        async def create() -> str:
            return await self.inner.create_group(name=name, members=members, key=key)

        made = await self._paced(group_writes(len(members)), create)
        assert made is not None
        return made

    async def add_members(self, group_id: str, members: Sequence[WalletAddress]) -> None:
        async def add() -> None:
            await self.inner.add_members(group_id, members)

        await self._paced(group_writes(len(members)), add)

    async def remove_members(self, group_id: str, members: Sequence[WalletAddress]) -> None:
        async def remove() -> None:
            await self.inner.remove_members(group_id, members)

        await self._paced(1, remove)

    async def rename_group(self, group_id: str, name: str) -> None:
        async def rename() -> None:
            await self.inner.rename_group(group_id, name)

        await self._paced(1, rename)

    async def send(self, group_id: str, text: str, *, key: str | None = None) -> str:
        async def send() -> str:
            return await self.inner.send(group_id, text, key=key)

        sent = await self._paced(1, send)
        assert sent is not None
        return sent

    async def send_encoded(self, group_id: str, content: Callable[[], Awaitable[bytes]], *,
                           key: str) -> str:
        async def send() -> str:
            return await self.inner.send_encoded(group_id, content, key=key)

        sent = await self._paced(1, send)
        assert sent is not None
        return sent

    def messages(self, high_water: Callable[[str], Awaitable[int | None]],
                 ) -> AsyncIterator[ChatMessage]:
        return self.inner.messages(high_water)
