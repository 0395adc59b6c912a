"""The chat network of a process that does no XMTP work (``xmtp.worker: false``).

Such a process is no installation of the gateway's inbox: it cannot make or change a
group. The API's group operations (make a group, add or remove wallets, rename it, is
a wallet on XMTP) are asked of the process that does the XMTP work through the shared
database (``chat_requests``): ``RemoteChatNetwork`` writes the request and waits for the
answer; ``ChatRequestServer``, in the XMTP process, makes the call on the real chat
network and writes the answer. PostgreSQL notifications carry the "now" both ways (polls
stand in when they are lost), so a request costs a few milliseconds more than the call.

The API keeps its behaviour: the call happens before anything is recorded, and a chat
network failure answers 502 ``chat_network_error``. That includes there being no XMTP
process to ask (``no gateway process does the XMTP work now``), and one that does not
answer within the timeout; a request still waiting then is deleted, never made later.

Sending into groups and reading the stream are the chat engine's and stream consumer's,
which run only in the XMTP process: they are not offered here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from gateway.domain.clock import Clock
from gateway.domain.ids import WalletAddress
from gateway.domain.ports import ChatMessage, ChatNetwork
from gateway.errors import ChatNetworkError, GatewayError, StoreError, WalletNotReachable
from gateway.store.chat_requests import ChatRequest, ChatRequests

log = logging.getLogger(__name__)

NOBODY = ("no gateway process does the XMTP work now (the one with xmtp.worker: true is "
          "not running)")


class RemoteChatNetwork:
    """``ChatNetwork`` for the API of a process without XMTP: see the module."""

    def __init__(self, requests: ChatRequests, clock: Clock, *, timeout: float,
                 anyone_serving: Callable[[], Awaitable[bool]],
                 asked: Callable[[], None] = lambda: None, poll_seconds: float = 0.5) -> None:
        self._requests = requests
        self._clock = clock
        self._timeout = timeout
        self._anyone_serving = anyone_serving
        self._asked = asked
        self._poll = poll_seconds
        self._answered = asyncio.Event()

    def answered(self, _payload: str = "") -> None:
        """A request was answered (a notification): the waiting ones look again."""
        self._answered.set()
        self._answered = asyncio.Event()

    async def is_reachable(self, wallet: WalletAddress) -> bool:
        answer = await self._ask("is_reachable", {"wallet": wallet})
        return bool(answer["reachable"])

    async def create_group(self, *, name: str, members: Sequence[WalletAddress],
                           key: str | None = None) -> str:
        answer = await self._ask("create_group",
                                 {"name": name, "members": list(members), "key": key})
        return str(answer["group_id"])

    async def add_members(self, group_id: str, members: Sequence[WalletAddress]) -> None:
        await self._ask("add_members", {"group_id": group_id, "members": list(members)})

    async def remove_members(self, group_id: str, members: Sequence[WalletAddress]) -> None:
        await self._ask("remove_members", {"group_id": group_id, "members": list(members)})

    async def rename_group(self, group_id: str, name: str) -> None:
        await self._ask("rename_group", {"group_id": group_id, "name": name})

    async def send(self, group_id: str, text: str, *, key: str | None = None) -> str:
        raise ChatNetworkError("this gateway process does no XMTP work: posts are the "
                               "XMTP process's")

    async def send_encoded(self, group_id: str, content: Callable[[], Awaitable[bytes]], *,
                           key: str) -> str:
        raise ChatNetworkError("this gateway process does no XMTP work: posts are the "
                               "XMTP process's")

    def messages(self, high_water: Callable[[str], Awaitable[int | None]],
                 ) -> AsyncIterator[ChatMessage]:
        raise ChatNetworkError("this gateway process does no XMTP work: the stream is the "
                               "XMTP process's")

    async def _ask(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            if not await self._anyone_serving():
                raise ChatNetworkError(NOBODY)
            now = self._clock.now()
            request_id = await self._requests.ask(
                kind, payload, now=now, deadline=now + timedelta(seconds=self._timeout))
        except StoreError as exc:
            raise ChatNetworkError(f"cannot ask the XMTP process: {exc}") from exc
        self._asked()
        try:
            answer = await self._answer(request_id)
        finally:
            with contextlib.suppress(StoreError):  # swept later if this fails
                await self._requests.forget(request_id)
        return _raise_failure(answer)

    async def _answer(self, request_id: int) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while True:
            answered = self._answered
            try:
                answer = await self._requests.answer_of(request_id)
            except StoreError as exc:
                raise ChatNetworkError(f"cannot read the XMTP process's answer: {exc}") from exc
            if answer is not None:
                return answer
            left = deadline - loop.time()
            if left <= 0:
                raise ChatNetworkError(f"the XMTP process did not answer within "
                                       f"{self._timeout:g}s")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, self._poll)):
                    await answered.wait()


def _raise_failure(answer: dict[str, Any]) -> dict[str, Any]:
    failure = answer.get("failure")
    if failure == "wallet_not_reachable":
        raise WalletNotReachable(str(answer["wallet"]))
    if failure is not None:
        raise ChatNetworkError(str(answer.get("message") or "the XMTP process failed"))
    return answer


class ChatRequestServer:
    """In the XMTP process: makes the chat-network calls other processes ask for."""

    def __init__(self, requests: ChatRequests, chat: ChatNetwork, clock: Clock, *,
                 answered: Callable[[int], None] = lambda _id: None,
                 poll_seconds: float = 1.0, batch: int = 20) -> None:
        self._requests = requests
        self._chat = chat
        self._clock = clock
        self._answered = answered
        self._poll = poll_seconds
        self._batch = batch
        self._wake = asyncio.Event()

    def wake(self, _payload: str = "") -> None:
        self._wake.set()

    async def run(self) -> None:
        swept_at = 0.0
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            try:
                taken = await self.serve_once()
                if loop.time() - swept_at > 600:
                    swept_at = loop.time()
                    await self._requests.sweep(now=self._clock.now())
            except Exception:  # the database is away, say: logged, tried at the next poll
                log.exception("serving chat requests failed")
                taken = 0
            if taken < self._batch:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll):
                        await self._wake.wait()

    async def serve_once(self) -> int:
        """Takes a batch of requests and answers each; returns how many."""
        taken = await self._requests.take(now=self._clock.now(), limit=self._batch)
        await asyncio.gather(*(self._serve(request) for request in taken))
        return len(taken)

    async def _serve(self, request: ChatRequest) -> None:
        try:
            answer = await self._call(request.kind, request.payload)
        except WalletNotReachable as exc:
            answer = {"failure": "wallet_not_reachable", "wallet": exc.wallet}
        except GatewayError as exc:
            answer = {"failure": "chat_network", "message": str(exc)}
        except Exception as exc:  # a bug: the asker gets a 502 naming it, the log the trace
            log.exception("chat request %s (%s) failed", request.id, request.kind)
            answer = {"failure": "error", "message": f"{type(exc).__name__}: {exc}"}
        await self._requests.answer(request.id, answer)
        self._answered(request.id)

    async def _call(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        chat = self._chat
        members = [WalletAddress(m) for m in payload.get("members", ())]
        if kind == "is_reachable":
            return {"reachable": await chat.is_reachable(WalletAddress(payload["wallet"]))}
        if kind == "create_group":
            return {"group_id": await chat.create_group(name=payload["name"], members=members,
                                                        key=payload.get("key"))}
        if kind == "add_members":
            await chat.add_members(payload["group_id"], members)
        elif kind == "remove_members":
            await chat.remove_members(payload["group_id"], members)
        elif kind == "rename_group":
            await chat.rename_group(payload["group_id"], payload["name"])
        else:
            raise ChatNetworkError(f"unknown chat request {kind!r}")
        return {}
