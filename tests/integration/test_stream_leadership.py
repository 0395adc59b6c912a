"""Two gateway processes on one database: only the leader consumes the XMTP stream, and
the other takes over when the leader stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.domain.clock import SystemClock
from gateway.domain.ports import ChatMessage
from gateway.domain.relay import Relay
from gateway.domain.rules import RuleBook
from gateway.errors import StoreError
from gateway.metrics import Metrics
from gateway.store.leader import leadership
from gateway.store.sql import open_store
from gateway.testing.chat_fake import RecordingChatNetwork
from gateway.workers import ChatStreamConsumer

KEY = {"k1": bytes(range(32))}


def _message(n: int) -> ChatMessage:
    return ChatMessage(group_id="group-x", message_id=f"m{n}", sender="0x" + "ab" * 20,  # type: ignore[arg-type]
                       sent_at_ns=n, text="hi", content_type="text")


class TestStreamLeadership:
    async def test_only_the_leader_reads_the_stream_and_a_follower_takes_over(
            self, tmp_path: Path) -> None:
        url = f"sqlite+aiosqlite:///{tmp_path}/gateway.db"
        stores = [await open_store(url, keys=KEY, active_key="k1") for _ in range(2)]
        chats = [RecordingChatNetwork(), RecordingChatNetwork()]
        tasks = []
        try:
            for store, chat in zip(stores, chats, strict=True):
                relay = Relay(store, RuleBook([], {}), SystemClock())
                consumer = ChatStreamConsumer(
                    store, chat, relay, Metrics(),
                    leadership=lambda store=store: leadership(
                        store.engine, "xmtp-stream", poll_seconds=0.05))
                tasks.append(asyncio.create_task(consumer.run()))
                await asyncio.sleep(0.2)  # the first one leads before the second starts
            for chat in chats:
                chat.inbox.put_nowait(_message(1))
            await asyncio.sleep(0.3)
            assert chats[0].inbox.empty(), "the leader reads its stream"
            assert chats[1].inbox.qsize() == 1, "the follower does not"

            tasks[0].cancel()
            await asyncio.gather(tasks[0], return_exceptions=True)
            for _ in range(100):
                if chats[1].inbox.empty():
                    break
                await asyncio.sleep(0.05)
            assert chats[1].inbox.empty(), "the follower took over"
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for store in stores:
                await store.close()

    async def test_a_failure_to_take_the_lead_is_retried(self, tmp_path: Path) -> None:
        store = await open_store(f"sqlite+aiosqlite:///{tmp_path}/gateway.db", keys=KEY,
                                 active_key="k1")
        chat = RecordingChatNetwork()
        attempts: list[int] = []

        @contextlib.asynccontextmanager
        async def flaky_lead() -> AsyncIterator[None]:
            attempts.append(1)
            if len(attempts) == 1:
                raise StoreError("database unreachable")
            yield

        consumer = ChatStreamConsumer(store, chat, Relay(store, RuleBook([], {}), SystemClock()),
                                      Metrics(), leadership=flaky_lead)
        task = asyncio.create_task(consumer.run())
        try:
            chat.inbox.put_nowait(_message(1))
            for _ in range(100):
                if chat.inbox.empty():
                    break
                await asyncio.sleep(0.05)
            assert chat.inbox.empty(), "the consumer took the lead on its second try"
            assert len(attempts) == 2
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await store.close()
