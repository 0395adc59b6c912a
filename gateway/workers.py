"""The chat stream consumer: records what wallets send into the gateway's groups. Generic
over the ``ChatNetwork`` port. Sending to either side is the outbox engine's
(``gateway.delivery``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from gateway.delivery.backoff import Backoff
from gateway.domain.ports import ChatMessage, ChatNetwork, Store
from gateway.domain.relay import Relay
from gateway.errors import GatewayError, StoreError, first_line
from gateway.metrics import Metrics
from gateway.store.leader import ProcessLock

log = logging.getLogger(__name__)

Describe = Callable[[ChatMessage], Awaitable[ChatMessage]]


class ChatStreamConsumer:
    """Feeds every wallet message to the relay. The ChatNetwork catches up from the
    stored high-water marks before it streams, so downtime loses nothing; when the stream
    fails it is opened again after a backoff (counted, logged, never swallowed)."""

    def __init__(self, store: Store, chat: ChatNetwork, relay: Relay, metrics: Metrics, *,
                 max_backoff: float = 30.0,
                 leadership: Callable[[], AbstractAsyncContextManager[None]] | None = None,
                 describe: Describe | None = None) -> None:
        """``describe``: the media step, which reads a message's attachments (without
        fetching a URL) before the relay records it."""
        self._store = store
        self._describe = describe
        self._leadership = leadership
        self._chat = chat
        self._relay = relay
        self._metrics = metrics
        self._reopen = Backoff(base=0.5, cap=max_backoff)

    async def _marks(self) -> Callable[[str], Awaitable[int | None]]:
        """Every group's mark as it is when the stream opens, read at once: the catch-up
        of thousands of groups asks one query instead of one each. Right for the whole
        opening: a group's mark moves only once its catch-up has been read."""
        async with self._store.transaction() as tx:
            marks = await tx.all_cursors()

        async def high_water(group_id: str) -> int | None:
            return marks.get(group_id)

        return high_water

    async def run(self) -> None:
        """Streams while this process leads (several processes may share one database;
        the others wait to take over). Losing or failing to take the lead (a database
        blip) is retried like a stream failure: the consumer never just ends."""
        failures = 0
        while True:
            try:
                async with (self._leadership() if self._leadership
                            else contextlib.nullcontext()):
                    failures = 0
                    await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception:  # counted and logged; the lead is sought again
                failures += 1
                self._metrics.stream_failures.inc()
                delay = self._reopen.delay(failures)
                log.exception("chat stream leadership failed; trying again in %.1fs", delay)
                await asyncio.sleep(delay)

    async def _consume(self) -> None:
        failures = 0
        while True:
            try:
                async for message in self._chat.messages(await self._marks()):
                    if self._describe is not None:
                        message = await self._describe(message)
                    outcome = await self._relay.receive_chat_message(message)
                    self._metrics.inbound.labels("xmtp", outcome.value).inc()
                    failures = 0
                raise GatewayError("the chat stream ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the stream must come back; counted and logged
                failures += 1
                self._metrics.stream_failures.inc()
                delay = self._reopen.delay(failures)
                # the trace once per outage: the reopens after it say one line each
                log.error("chat stream failed (%d in a row): %s; reopening in %.1fs",
                          failures, first_line(exc), delay, exc_info=failures == 1)
                await asyncio.sleep(delay)


class XmtpWork:
    """The XMTP work of the one process that does it: the chat engine (posts), the stream
    consumer and the server of other processes' chat requests, run together while this
    process holds the XMTP lock (``lock``; None: nothing to share it with). When the lock
    is lost (its connection gone) they stop, the lock is sought again, and they start
    again once it is held: never do two processes post or read the stream at once."""

    def __init__(self, parts: Sequence[Callable[[], Coroutine[Any, Any, None]]], *,
                 lock: ProcessLock | None, metrics: Metrics) -> None:
        self._parts = parts
        self._lock = lock
        self._metrics = metrics

    async def run(self) -> None:
        while True:
            if self._lock is not None and not self._lock.held:
                await self._lock.acquire()
                log.info("took back %s; XMTP work resumes", self._lock.name)
            try:
                async with asyncio.TaskGroup() as group:
                    for part in self._parts:
                        group.create_task(part())
                    if self._lock is not None:
                        group.create_task(self._lock.watch())
            except* StoreError as lost:
                self._metrics.stream_failures.inc()
                log.error("XMTP work stopped: %s; waiting to hold the lock again",
                          first_line(lost.exceptions[0]))
                await asyncio.sleep(1.0)
            except* Exception:
                # a bug: said at once (and /readyz says "xmtp: stopped"), not at shutdown
                log.exception("XMTP work stopped")
                raise
