"""The event hub: wakes event-stream subscribers when the log grows, and renders events
(once each, shared by every subscriber and the webhook sender).

Wake-ups come from two places: ``notify()`` right after this process commits an event,
and a modest poll of the log's newest id for events other processes (or parts of the
gateway that do not call ``notify``) wrote. Subscribers never poll the log themselves:
they sleep until woken, so a hundred idle streams cost nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from gateway.api.views import (
    JSON,
    conversation_json,
    delivery_json,
    event_json,
    message_json,
    participant_json,
)
from gateway.domain.ids import ConversationId, DeliveryId, MessageId, ParticipantId
from gateway.domain.models import Event
from gateway.domain.ports import ApiQueries, Store, StoreTx
from gateway.errors import StoreError

log = logging.getLogger(__name__)

EVENT_TYPES = (
    "conversation.added", "conversation.updated", "conversation.removed",
    "participant.added", "participant.updated", "participant.removed", "message.added",
    "delivery.updated",
)

_CACHE_SIZE = 4096

_ReadKey = tuple[int, int, ConversationId | None, asyncio.Event]


class EventHub:
    def __init__(self, *, store: Store, queries: ApiQueries, poll_interval: float) -> None:
        self._store = store
        self._queries = queries
        self._poll_interval = poll_interval
        self._changed = asyncio.Event()
        self._newest_seen = 0
        self._rendered: OrderedDict[int, JSON] = OrderedDict()
        self._rendering: dict[int, asyncio.Task[dict[int, JSON]]] = {}
        self._frames: dict[int, bytes] = {}
        self._reading: dict[_ReadKey, asyncio.Future[list[Event]]] = {}
        self.closing = False

    # ---- wake-ups ---------------------------------------------------------------------

    def notify(self) -> None:
        """Wakes every subscriber waiting now. Each wait uses the Event current when it
        began, so a notify between a subscriber's read and its wait is never lost."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def signal(self) -> asyncio.Event:
        """Take this before reading the log; wait on it after finding nothing new."""
        return self._changed

    def close(self) -> None:
        """Shutting down: every stream ends so the server can stop promptly."""
        self.closing = True
        self.notify()

    async def poll(self) -> None:
        """Runs until cancelled: notices events written elsewhere."""
        while True:
            try:
                newest = await self._queries.last_event_id()
            except StoreError as exc:
                # the database is away for now; subscribers keep waiting, we keep looking
                log.warning("event poll failed: %s", exc)
            else:
                if newest != self._newest_seen:
                    self._newest_seen = newest
                    self.notify()
            await asyncio.sleep(self._poll_interval)

    # ---- reading ------------------------------------------------------------------------

    async def events_after(self, after: int, limit: int,
                           conversation_id: ConversationId | None,
                           signal: asyncio.Event) -> list[Event]:
        """The log after ``after``. Subscribers woken together mostly stand at the same
        place: they share one query instead of each running its own. ``signal`` is the
        caller's from ``signal()``: a query is shared only among callers holding the same
        one, so none gets a result read before a commit it was woken for."""
        key = (after, limit, conversation_id, signal)
        pending = self._reading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        task = asyncio.ensure_future(self._queries.list_events(
            after=after, limit=limit, conversation_id=conversation_id))
        task.add_done_callback(_retrieve)
        self._reading[key] = task
        try:
            return await asyncio.shield(task)
        finally:
            if self._reading.get(key) is task:
                del self._reading[key]

    # ---- rendering --------------------------------------------------------------------

    async def render(self, events: Sequence[Event]) -> list[JSON]:
        """The events as API JSON, their referenced resources filled in from the store
        (a message body lives only in the encrypted messages table, never in the log).

        Each event is rendered once: a hundred subscribers woken by the same commit ask
        for the same events at once, and all wait for one rendering. It runs as a task of
        its own, so the subscriber that started it may go away (a closed stream is a
        cancelled handler) without cancelling it for the others."""
        new = [e for e in events if e.id not in self._rendered and e.id not in self._rendering]
        if new:
            task = asyncio.ensure_future(self._render_shared(new))
            task.add_done_callback(_retrieve)
            for event in new:
                self._rendering[event.id] = task
        found = []
        for event in events:
            cached = self._rendered.get(event.id)
            if cached is None:
                pending = self._rendering.get(event.id)
                cached = ((await asyncio.shield(pending))[event.id] if pending is not None
                          else await self._one(event))
            found.append(cached)
        return found

    async def _render_shared(self, events: Sequence[Event]) -> dict[int, JSON]:
        try:
            rendered = await self._hydrate(events)
            for event_id, json_ in rendered.items():
                self._remember(event_id, json_)
            return rendered
        finally:
            for event in events:
                self._rendering.pop(event.id, None)

    async def _one(self, event: Event) -> JSON:
        return (await self._hydrate([event]))[event.id]

    async def _hydrate(self, events: Sequence[Event]) -> dict[int, JSON]:
        message_ids = [MessageId(str(e.data["message_id"])) for e in events
                       if e.type == "message.added" and "message" not in e.data
                       and "message_id" in e.data]
        found_messages = await self._queries.messages_by_id(message_ids)
        rendered = {}
        rare = []
        for event in events:
            data = dict(event.data)
            if event.type == "message.added" and "message" not in data and "message_id" in data:
                message = found_messages.get(MessageId(str(data["message_id"])))
                if message is not None:
                    data["message"] = message_json(message)
                rendered[event.id] = event_json(event, data)
            elif _needs_store(event):
                rare.append(event)
            else:
                rendered[event.id] = event_json(event, data)
        if rare:
            async with self._store.transaction() as tx:
                for event in rare:
                    rendered[event.id] = event_json(event, await _fill_in(tx, event))
        return rendered

    async def frames(self, events: Sequence[Event],
                     types: frozenset[str] | None = None) -> bytes:
        """The events (of ``types``, when given) as server-sent events, each encoded
        once however many subscribers send it."""
        parts = []
        for rendered in await self.render(events):
            if types is not None and rendered["type"] not in types:
                continue
            frame = self._frames.get(rendered["id"])
            parts.append(frame if frame is not None else sse_frame(rendered))
        return b"".join(parts)

    def _remember(self, event_id: int, rendered: JSON) -> None:
        self._rendered[event_id] = rendered
        self._frames[event_id] = sse_frame(rendered)
        while len(self._rendered) > _CACHE_SIZE:
            evicted, _ = self._rendered.popitem(last=False)
            self._frames.pop(evicted, None)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """A shared read or rendering whose waiters all went away: its failure is theirs,
    not an unhandled one for asyncio to report."""
    if not task.cancelled():
        task.exception()


def _needs_store(event: Event) -> bool:
    """Events written without their resource (the relay writes ids only)."""
    if event.type in ("conversation.added", "conversation.updated"):
        return "conversation" not in event.data and event.conversation_id is not None
    if event.type == "participant.removed":
        return "participant" not in event.data and "participant_id" in event.data
    return (event.type == "delivery.updated" and "delivery" not in event.data
            and "delivery_id" in event.data)


async def _fill_in(tx: StoreTx, event: Event) -> JSON:
    data = dict(event.data)
    if event.type == "delivery.updated":
        delivery = await tx.get_delivery(DeliveryId(str(data["delivery_id"])))
        if delivery is not None:
            data["delivery"] = delivery_json(delivery)
    elif event.type == "participant.removed":
        participant = await tx.get_participant(ParticipantId(str(data["participant_id"])))
        if participant is not None:
            data["participant"] = participant_json(participant)
    elif event.conversation_id is not None:
        conversation = await tx.get_conversation(ConversationId(event.conversation_id))
        if conversation is not None:
            data["conversation"] = conversation_json(conversation)
    return data


def sse_frame(rendered: JSON) -> bytes:
    """One server-sent event: its id (what Last-Event-ID resumes from), type and JSON."""
    payload = json.dumps(rendered, separators=(",", ":"))
    return f"id: {rendered['id']}\nevent: {rendered['type']}\ndata: {payload}\n\n".encode()
