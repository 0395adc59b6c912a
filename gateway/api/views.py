"""Domain objects as API JSON (snake_case, ISO 8601 UTC timestamps), in one place so the
REST answers, the event stream and the webhooks all show the same shapes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gateway.api.pagination import Page
from gateway.domain.models import Conversation, Delivery, Event, Message, Participant

JSON = dict[str, Any]


def timestamp(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def conversation_json(c: Conversation) -> JSON:
    return {
        "id": c.id,
        "unique_name": c.unique_name,
        "friendly_name": c.friendly_name,
        "attributes": dict(c.attributes),
        "state": c.state.value,
        "rule": c.rule,
        "xmtp_group_id": c.xmtp_group_id,
        "created_at": timestamp(c.created_at),
        "updated_at": timestamp(c.updated_at),
        "last_message_at": timestamp(c.last_message_at),
    }


def participant_json(p: Participant) -> JSON:
    return {
        "id": p.id,
        "conversation_id": p.conversation_id,
        "channel": p.channel.value,
        "identity": p.identity,
        "address": p.address,
        "proxy_address": p.proxy_address,
        "consent": p.consent.value,
        "attributes": dict(p.attributes),
        "joined_at": timestamp(p.joined_at),
        "left_at": timestamp(p.left_at),
    }


def delivery_json(d: Delivery) -> JSON:
    return {
        "id": d.id,
        "message_id": d.message_id,
        "participant_id": d.participant_id,
        "channel": d.channel.value,
        "state": d.state.value,
        "attempts": d.attempts,
        "error_code": d.error_code,
        "error_message": d.error_message,
        "created_at": timestamp(d.created_at),
        "updated_at": timestamp(d.updated_at),
    }


def message_json(m: Message, receipts: Sequence[Delivery] | None = None) -> JSON:
    body: JSON = {
        "id": m.id,
        "conversation_id": m.conversation_id,
        "index": m.index,
        "author": m.author,
        "body": m.body,
        "media": [{"url": x.url, "content_type": x.content_type} for x in m.media],
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
