"""The event hub shares one read and one rendering among subscribers woken together; a
subscriber that goes away meanwhile must not take the others' result with it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.api.hub import EventHub
from gateway.domain.ids import ConversationId, MessageId
from gateway.domain.models import Event, Message, MessageSource

CONVERSATION = ConversationId("CH1")
EVENTS = [Event(id=n, type="message.added", conversation_id=CONVERSATION,
                data={"message_id": f"IM{n}"}) for n in (1, 2)]


class GatedQueries:
    """Answers the hub's two reads from fixed data once ``open`` is set; records calls."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.calls: list[str] = []

    async def messages_by_id(self, message_ids: Sequence[MessageId]) -> dict[MessageId, Message]:
        self.calls.append("messages_by_id")
        await self.open.wait()
        return {m: Message(id=m, conversation_id=CONVERSATION, index=1, author=None,
                           body=f"body of {m}", media=(), attributes={},
                           source=MessageSource.SMS, external_id=None,
                           created_at=datetime(2026, 3, 1, tzinfo=UTC)) for m in message_ids}

    async def list_events(self, *, after: int, limit: int,
                          conversation_id: ConversationId | None) -> list[Event]:
        self.calls.append("list_events")
        await self.open.wait()
        return [e for e in EVENTS if e.id > after][:limit]


def _hub(queries: GatedQueries) -> EventHub:
    return EventHub(store=None, queries=queries, poll_interval=60)  # type: ignore[arg-type]


async def _two_subscribers(first: Any, second: Any) -> Any:
    """Starts both, cancels the first while the shared work is under way, then lets
    the work finish; returns what the second got."""
    leaving, staying = asyncio.create_task(first), asyncio.create_task(second)
    await asyncio.sleep(0.01)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    return staying


class TestASubscriberGoingAway:
    async def test_does_not_cut_short_the_rendering_others_wait_for(self) -> None:
        queries = GatedQueries()
        hub = _hub(queries)
        staying = await _two_subscribers(hub.render(EVENTS), hub.render(EVENTS))
        queries.open.set()
        rendered = await asyncio.wait_for(staying, 2)
        assert [r["data"]["message"]["body"] for r in rendered] == ["body of IM1", "body of IM2"]
        assert queries.calls == ["messages_by_id"], "rendered once, for both"

    async def test_does_not_cut_short_the_read_others_wait_for(self) -> None:
        queries = GatedQueries()
        hub = _hub(queries)
        signal = hub.signal()
        staying = await _two_subscribers(hub.events_after(0, 10, None, signal),
                                         hub.events_after(0, 10, None, signal))
        queries.open.set()
        assert await asyncio.wait_for(staying, 2) == EVENTS
        assert queries.calls == ["list_events"], "read once, for both"

    async def test_a_rendering_nobody_waits_for_any_more_still_fills_the_cache(self) -> None:
        queries = GatedQueries()
        hub = _hub(queries)
        leaving = asyncio.create_task(hub.render(EVENTS))
        await asyncio.sleep(0.01)
        leaving.cancel()
        queries.open.set()
        await asyncio.sleep(0.01)
        assert len(await asyncio.wait_for(hub.render(EVENTS), 2)) == 2
        assert queries.calls == ["messages_by_id"]
