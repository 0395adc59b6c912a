"""Domain objects as API JSON (snake_case, ISO 8601 UTC timestamps), in one place so the
REST answers, the event stream and the webhooks all show the same shapes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.api.pagination import Page
from gateway.domain.models import Delivery, Event, Media, Message
from gateway.domain.records import (
    conversation_record,
    delivery_record,
    participant_record,
    timestamp,
)

JSON = dict[str, Any]


conversation_json = conversation_record
participant_json = participant_record
delivery_json = delivery_record


def media_json(m: Media) -> JSON:
    """A file as the API shows it: never a remote attachment's keys. ``url`` is null for
    a file the gateway holds (a wallet's inline attachment)."""
    return {"url": m.url or None, "content_type": m.content_type, "filename": m.filename,
            "size": m.size}


def message_json(m: Message, receipts: Sequence[Delivery] | None = None) -> JSON:
    body: JSON = {
        "id": m.id,
        "conversation_id": m.conversation_id,
        "index": m.index,
        "author": m.author,
        "body": m.body,
        "media": [media_json(x) for x in m.media],
        "attributes": dict(m.attributes),
        "source": m.source.value,
        "external_id": m.external_id,
        "created_at": timestamp(m.created_at),
    }
    if receipts is not None:
        body["receipts"] = [delivery_json(d) for d in receipts]
    return body


def page_json(page: Page[Any], items: list[JSON]) -> JSON:
    return {
        "data": items,
        "has_next": page.has_next,
        "has_prev": page.has_prev,
        "next_page_token": page.next_page_token,
        "prev_page_token": page.prev_page_token,
    }


def event_json(event: Event, data: JSON) -> JSON:
    return {
        "id": event.id,
        "type": event.type,
        "conversation_id": event.conversation_id,
        "created_at": timestamp(event.created_at),
        "data": data,
    }
