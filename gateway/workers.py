"""The chat stream consumer: records what wallets send into the gateway's groups. Generic
over the ``ChatNetwork`` port. Sending to either side is the outbox engine's
(``gateway.delivery``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from gateway.delivery.backoff import Backoff
from gateway.domain.ports import ChatMessage, ChatNetwork, Store
from gateway.domain.relay import Relay
from gateway.errors import GatewayError, first_line
from gateway.metrics import Metrics

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

    async def high_water(self, group_id: str) -> int | None:
        async with self._store.transaction() as tx:
            return await tx.get_cursor(group_id)

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
                async for message in self._chat.messages(self.high_water):
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
