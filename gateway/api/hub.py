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

from gateway.api.queries import ApiQueries
from gateway.api.views import JSON, conversation_json, delivery_json, event_json, message_json
from gateway.domain.ids import ConversationId, DeliveryId, MessageId
from gateway.domain.models import Event
from gateway.domain.ports import Store, StoreTx
from gateway.errors import StoreError

log = logging.getLogger(__name__)

EVENT_TYPES = (
    "conversation.added", "conversation.updated", "conversation.removed",
    "participant.added", "participant.removed", "message.added", "delivery.updated",
)

_CACHE_SIZE = 4096


class EventHub:
    def __init__(self, *, store: Store, queries: ApiQueries, poll_interval: float) -> None:
        self._store = store
        self._queries = queries
        self._poll_interval = poll_interval
        self._changed = asyncio.Event()
        self._newest_seen = 0
        self._rendered: OrderedDict[int, JSON] = OrderedDict()
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

    # ---- rendering --------------------------------------------------------------------

    async def render(self, events: Sequence[Event]) -> list[JSON]:
        """The events as API JSON, their referenced resources filled in from the store
        (a message body lives only in the encrypted messages table, never in the log)."""
        missing = [e for e in events if e.id not in self._rendered]
        if missing:
            async with self._store.transaction() as tx:
                for event in missing:
                    self._remember(event.id, event_json(event, await _hydrate(tx, event)))
        return [self._rendered[e.id] if e.id in self._rendered else event_json(e, dict(e.data))
                for e in events]

    def _remember(self, event_id: int, rendered: JSON) -> None:
        self._rendered[event_id] = rendered
        while len(self._rendered) > _CACHE_SIZE:
            self._rendered.popitem(last=False)


async def _hydrate(tx: StoreTx, event: Event) -> JSON:
    data = dict(event.data)
    if event.type == "message.added" and "message" not in data and "message_id" in data:
        message = await tx.get_message(MessageId(str(data["message_id"])))
        if message is not None:
            data["message"] = message_json(message)
    elif (event.type in ("conversation.added", "conversation.updated")
          and "conversation" not in data and event.conversation_id is not None):
        conversation = await tx.get_conversation(ConversationId(event.conversation_id))
        if conversation is not None:
            data["conversation"] = conversation_json(conversation)
    elif event.type == "delivery.updated" and "delivery" not in data and "delivery_id" in data:
        delivery = await tx.get_delivery(DeliveryId(str(data["delivery_id"])))
        if delivery is not None:
            data["delivery"] = delivery_json(delivery)
    return data


def sse_frame(rendered: JSON) -> bytes:
    """One server-sent event: its id (what Last-Event-ID resumes from), type and JSON."""
    payload = json.dumps(rendered, separators=(",", ":"))
    return f"id: {rendered['id']}\nevent: {rendered['type']}\ndata: {payload}\n\n".encode()
