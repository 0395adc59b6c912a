"""The event log's part of the OpenAPI document: one schema per event type (its ``data``
with the resources the stream fills in), the ``Event`` union the webhooks POST, and the
server-sent-event frames of ``GET /v1/events``.

Event data are open objects: what is listed is what the gateway writes today (some of it
only by the relay, some only when the resource still exists), and new fields may come.
"""

from __future__ import annotations

from gateway.api.hub import EVENT_TYPES
from gateway.api.schema import ID, JSON, TIME, closed_object, nullable, open_object, ref
from gateway.domain.models import DeliveryState

_CONVERSATION = {**ref("Conversation"),
                 "description": "the conversation now (absent once it is deleted)"}

DATA: dict[str, JSON] = {
    "conversation.added": open_object({
        "conversation": _CONVERSATION,
        "rule": {**nullable({"type": "string"}),
                 "description": "the rule that opened it (conversations the relay opens)"},
    }, [], "a conversation was created (by the API, or by the relay for a first text)"),
    "conversation.updated": open_object({
        "conversation": _CONVERSATION,
        "changed": {"type": "array", "items": {"type": "string"},
                    "description": "the fields whose value changed"},
    }, [], "a conversation's names, attributes or state changed"),
    "conversation.removed": open_object({
        "conversation_id": ID,
        "conversation": {**ref("Conversation"), "description": "as it was when deleted"},
    }, ["conversation_id"], "a conversation was deleted"),
    "participant.added": open_object({
        "participant": ref("Participant"),
    }, ["participant"], "a wallet or a phone joined"),
    "participant.updated": open_object({
        "participant": {**ref("Participant"), "description": "as it is now"},
        "participant_id": ID,
    }, ["participant"], "a participant's consent changed (a phone's STOP or START, a "
                        "wallet leaving the group)"),
    "participant.removed": open_object({
        "participant": {**ref("Participant"), "description": "as it is now (left_at set)"},
        "participant_id": {**ID, "description": "written by the relay; "
                                                "`participant` is filled in from it"},
    }, [], "a participant left or was removed"),
    "message.added": open_object({
        "message_id": ID,
        "index": {"type": "integer", "minimum": 0},
        "message": {**ref("Message"), "description": "the message, body included "
                                                     "(absent once it is deleted)"},
        "receipts": {"type": "array", "items": ref("Receipt"),
                     "description": "its deliveries as they were made, one per participant "
                                    "it goes to (each change after that is a "
                                    "delivery.updated)"},
    }, ["message_id", "index"], "a message was recorded (sent through the API, bridged "
                                "from a phone or a wallet)"),
    "delivery.updated": open_object({
        "delivery_id": ID,
        "message_id": ID,
        "participant_id": ID,
        "state": {"enum": [s.value for s in DeliveryState]},
        "error_code": nullable({"type": "integer"}),
        "delivery": {**ref("Receipt"), "description": "the delivery as this change "
                                                      "left it"},
    }, [], "a delivery to one participant changed (a claim, a retry, a result, a status "
           "callback): one event per change"),
}


def _name(event_type: str) -> str:
    """"conversation.added" -> "ConversationAdded"."""
    return "".join(part.capitalize() for part in event_type.split("."))


def _event(event_type: str) -> JSON:
    return closed_object({
        "id": {"type": "integer", "minimum": 1,
               "description": "the event's position in the log (resume after it)"},
        "type": {"const": event_type},
        "conversation_id": nullable(ID),
        "created_at": nullable(TIME),
        "data": ref(f"{_name(event_type)}Data"),
    })


def _frame(event_type: str) -> JSON:
    return closed_object({
        "id": {"type": "string", "pattern": "^[0-9]+$",
               "description": "the event id: send the last one seen as Last-Event-ID"},
        "event": {"const": event_type},
        "data": {**ref(f"{_name(event_type)}Event"),
                 "description": "the frame's data line: the event as JSON"},
    })


def _union(kind: str, discriminator: str, description: str) -> JSON:
    return {
        "oneOf": [ref(f"{_name(t)}{kind}") for t in EVENT_TYPES],
        "discriminator": {"propertyName": discriminator, "mapping": {
            t: f"#/components/schemas/{_name(t)}{kind}" for t in EVENT_TYPES}},
        "description": description,
    }


SCHEMAS: JSON = {
    **{f"{_name(t)}Data": DATA[t] for t in EVENT_TYPES},
    **{f"{_name(t)}Event": _event(t) for t in EVENT_TYPES},
    **{f"{_name(t)}Frame": _frame(t) for t in EVENT_TYPES},
    "Event": _union("Event", "type", "An event of the log, by its type; the JSON each "
                                     "webhook POSTs and each stream frame carries."),
    "EventFrame": _union("Frame", "event", "One server-sent event of GET /v1/events: its "
                                           "`id:`, `event:` and `data:` lines, the data "
                                           "parsed from JSON."),
}

STREAM_DESCRIPTION = (
    "An endless text/event-stream. It opens with a frame of `retry:` and `id:` lines only "
    "(the current position, nothing to dispatch), then sends one frame per event: "
    "`id: <event id>`, `event: <type>`, `data: <the Event as one line of JSON>`, each "
    "frame ended by a blank line (EventFrame describes one, by its `event`). A `: "
    "keep-alive` comment goes out when the stream is idle.")

STREAM_CONTENT: JSON = {"text/event-stream": {"schema": ref("EventFrame")}}

WEBHOOK: JSON = {
    "post": {
        "operationId": "eventWebhook",
        "summary": "Each event, POSTed to every URL of webhooks.urls",
        "parameters": [
            {"name": "X-Gateway-Event-Id", "in": "header", "required": True,
             "schema": {"type": "string", "pattern": "^[0-9]+$"},
             "description": "the event id (deliveries are at least once: dedupe on it)"},
            {"name": "X-Gateway-Event-Type", "in": "header", "required": True,
             "schema": {"enum": list(EVENT_TYPES)}},
            {"name": "X-Gateway-Signature", "in": "header", "required": True,
             "schema": {"type": "string", "pattern": "^t=[0-9]+,v1=[0-9a-f]{64}$"},
             "description": "HMAC-SHA256(webhooks.secret, '<t>.<raw body>') in hex"},
        ],
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": ref("Event")}}},
        "responses": {"2XX": {"description": "taken"},
                      "default": {"description": "408, 425, 429, 5xx: retried with "
                                                 "backoff; other 4xx: given up"}},
    },
}
