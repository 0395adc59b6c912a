"""A recording ``ChatNetwork`` for tests: groups kept in a dict, every send recorded,
reachability decided by a set the test fills. It remembers; it does not pretend to be
XMTP (no encryption, no sync), so tests assert on what the gateway asked of it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from gateway.domain.ids import WalletAddress
from gateway.domain.ports import ChatMessage
from gateway.errors import ChatNetworkError, WalletNotReachable


@dataclass
class FakeGroup:
    id: str
    name: str
    members: set[WalletAddress] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class SentChat:
    group_id: str
    text: str  # "" for encoded content
    message_id: str
    key: str | None = None  # the send's idempotency key, as the worker passed it
    encoded: bytes | None = field(default=None, repr=False)  # what send_encoded sent


class RecordingChatNetwork:
    def __init__(self, reachable: Iterable[str] = ()) -> None:
        self.reachable: set[str] = set(reachable)
        self.groups: dict[str, FakeGroup] = {}
        self.sent: list[SentChat] = []
        self.removed: list[tuple[str, WalletAddress]] = []
        self.failing = False  # when set, every call raises ChatNetworkError
        self.inbox: asyncio.Queue[ChatMessage] = asyncio.Queue()
        self.republished: list[SentChat] = []  # keyed sends that found their message
        self.hold: asyncio.Event | None = None  # awaited after a send, before it answers
        self._by_key: dict[tuple[str, str], SentChat] = {}
        self._groups_by_key: dict[str, str] = {}
        self._ids = itertools.count(1)

    def _check(self) -> None:
        if self.failing:
            raise ChatNetworkError("the chat network is down (fake)")

    async def is_reachable(self, wallet: WalletAddress) -> bool:
        self._check()
        return wallet in self.reachable

    async def create_group(self, *, name: str, members: Sequence[WalletAddress],
                           key: str | None = None) -> str:
        """As the port promises: a second creation under the same key returns the group
        made the first time."""
        self._check()
        for wallet in members:
            if wallet not in self.reachable:
                raise WalletNotReachable(wallet)
        if key is not None and key in self._groups_by_key:
            return self._groups_by_key[key]
        group_id = f"group-{next(self._ids)}"
        self.groups[group_id] = FakeGroup(group_id, name, set(members))
        if key is not None:
            self._groups_by_key[key] = group_id
        return group_id

    def _group(self, group_id: str) -> FakeGroup:
        group = self.groups.get(group_id)
        if group is None:
            raise ChatNetworkError(f"no group {group_id}")
        return group

    async def add_members(self, group_id: str, members: Sequence[WalletAddress]) -> None:
        self._check()
        group = self._group(group_id)
        for wallet in members:
            if wallet not in self.reachable:
                raise WalletNotReachable(wallet)
        group.members.update(members)

    async def remove_members(self, group_id: str, members: Sequence[WalletAddress]) -> None:
        self._check()
        group = self._group(group_id)
        for wallet in members:
            group.members.discard(wallet)
            self.removed.append((group_id, wallet))

    async def rename_group(self, group_id: str, name: str) -> None:
        self._check()
        self._group(group_id).name = name

    async def send(self, group_id: str, text: str, *, key: str | None = None) -> str:
        """As the port promises: a second send under the same key (into the same group)
        publishes the message prepared the first time, never a second one."""
        self._check()
        self._group(group_id)
        prepared = self._by_key.get((group_id, key)) if key is not None else None
        if prepared is not None:
            self.republished.append(prepared)
            return prepared.message_id
        message_id = f"msg-{next(self._ids)}"
        sent = SentChat(group_id, text, message_id, key)
        self.sent.append(sent)
        if key is not None:
            self._by_key[(group_id, key)] = sent
        if self.hold is not None:
            await self.hold.wait()
        return message_id

    async def send_encoded(self, group_id: str, content: Callable[[], Awaitable[bytes]], *,
                           key: str) -> str:
        """As the port promises: ``content`` is called only when nothing was sent under
        ``key`` into this group yet."""
        self._check()
        self._group(group_id)
        prepared = self._by_key.get((group_id, key))
        if prepared is not None:
            self.republished.append(prepared)
            return prepared.message_id
        encoded = await content()
        self._check()
        message_id = f"msg-{next(self._ids)}"
        sent = SentChat(group_id, "", message_id, key, encoded)
        self.sent.append(sent)
        self._by_key[(group_id, key)] = sent
        if self.hold is not None:
            await self.hold.wait()
        return message_id

    async def messages(
        self, high_water: Callable[[str], Awaitable[int | None]],
    ) -> AsyncIterator[ChatMessage]:
        """Yields what tests put on ``inbox``; the high-water marks are not consulted."""
        while True:
            yield await self.inbox.get()
