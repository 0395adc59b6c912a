"""Domain objects as plain records (snake_case keys, ISO 8601 UTC timestamps): what an
event carries of the resource it announces, and what the API answers, in one place, so
replaying the event log gives back exactly what the API lists."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.domain.models import Conversation, Delivery, Participant

Record = dict[str, Any]


def timestamp(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def conversation_record(c: Conversation) -> Record:
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


def participant_record(p: Participant) -> Record:
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


def delivery_record(d: Delivery) -> Record:
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
