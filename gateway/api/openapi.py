"""The OpenAPI 3.1 document of ``/v1``, served at ``/v1/openapi.json``.

Written by hand next to the handlers; a test walks every route of the app against it and
validates real responses with these schemas, and schemathesis fuzzes the API from it.
"""

from __future__ import annotations

from aiohttp import web

from gateway.api import openapi_events
from gateway.api.hub import EVENT_TYPES
from gateway.api.pagination import MAX_INDEX, MAX_INT64, MAX_PAGE_SIZE
from gateway.api.params import DOT_SEGMENTS
from gateway.api.schema import ID, JSON, TIME, closed_object, nullable, ref
from gateway.domain.models import (
    PHONE_CHANNELS,
    Channel,
    Consent,
    ConversationState,
    DeliveryState,
    MessageSource,
)
from gateway.domain.phones import E164_EXACT

_E164 = {"type": "string", "pattern": f"^{E164_EXACT.pattern}$"}
_ATTRIBUTES = {"type": "object", "additionalProperties": True,
               "description": "any JSON object of at most 16 KiB (as compact UTF-8 JSON), "
                              "nested at most 32 levels deep"}
_NAME = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"\S"}
_UNIQUE_NAME = {**_NAME,
                "not": {"anyOf": [{"pattern": r"^\s*[Cc][Hh][0-9a-fA-F]{32}\s*$"},
                                  {"enum": list(DOT_SEGMENTS)}]},
                "description": "any name but one shaped like a conversation id (CH + 32 "
                               "hex), '.' or '..'; escape it in paths (%7B for {, %2F for /)"}


SCHEMAS: JSON = {
    "Error": closed_object({
        "error": {"type": "string", "description": "what went wrong, for people"},
        "code": {"type": "string", "description": "a stable code, for programs"},
    }),
    "Conversation": closed_object({
        "id": ID,
        "unique_name": nullable({"type": "string"}),
        "friendly_name": nullable({"type": "string"}),
        "attributes": _ATTRIBUTES,
        "state": {"enum": [s.value for s in ConversationState]},
        "rule": nullable({"type": "string"}),
        "xmtp_group_id": nullable({"type": "string"}),
        "created_at": TIME,
        "updated_at": TIME,
        "last_message_at": nullable(TIME),
    }),
    "Participant": closed_object({
        "id": ID,
        "conversation_id": ID,
        "channel": {"enum": [c.value for c in Channel]},
        "identity": nullable({"type": "string"}),
        "address": nullable({"type": "string"}),
        "proxy_address": nullable({"type": "string"}),
        "consent": {"enum": [c.value for c in Consent]},
        "attributes": _ATTRIBUTES,
        "joined_at": TIME,
        "left_at": nullable(TIME),
    }),
    "Media": closed_object({
        "url": nullable({"type": "string", "description": "null: a file the gateway holds "
                         "(a wallet's inline attachment)"}),
        "content_type": nullable({"type": "string"}),
        "filename": nullable({"type": "string"}),
        "size": nullable({"type": "integer", "minimum": 0,
                          "description": "bytes, as the sender gave it"})}),
    "Receipt": closed_object({
        "id": ID,
        "message_id": ID,
        "participant_id": ID,
        "channel": {"enum": [c.value for c in Channel]},
        "state": {"enum": [s.value for s in DeliveryState]},
        "attempts": {"type": "integer", "minimum": 0},
        "error_code": nullable({"type": "integer"}),
        "error_message": nullable({"type": "string"}),
        "created_at": TIME,
        "updated_at": TIME,
    }),
    "Message": closed_object({
        "id": ID,
        "conversation_id": ID,
        "index": {"type": "integer", "minimum": 0},
        "author": nullable(ID),
        "body": nullable({"type": "string"}),
        "media": {"type": "array", "items": ref("Media")},
        "attributes": _ATTRIBUTES,
        "source": {"enum": [s.value for s in MessageSource]},
        "external_id": nullable({"type": "string"}),
        "created_at": TIME,
        "receipts": {"type": "array", "items": ref("Receipt"),
                     "description": "per-participant delivery receipts (single fetch only)"},
    }, required=["id", "conversation_id", "index", "author", "body", "media", "attributes",
                 "source", "external_id", "created_at"]),
    "ParticipantList": closed_object({"data": {"type": "array", "items": ref("Participant")}}),
    "ConversationCreate": closed_object({
        "friendly_name": nullable(_NAME),
        "unique_name": nullable(_UNIQUE_NAME),
        "attributes": nullable(_ATTRIBUTES),
    }, required=[]),
    "ConversationUpdate": {**closed_object({
        "friendly_name": nullable(_NAME),
        "unique_name": nullable(_UNIQUE_NAME),
        "attributes": nullable(_ATTRIBUTES),
        "state": {"enum": [s.value for s in ConversationState]},
    }, required=[]), "minProperties": 1},
    "ChatParticipantCreate": closed_object({
        "identity": {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$",
                     "description": "the wallet address; it must be on XMTP"},
        "channel": {"const": "xmtp"},
        "attributes": nullable(_ATTRIBUTES),
    }, required=["identity"]),
    "PhoneParticipantCreate": closed_object({
        "address": {**_E164, "description": "the phone, exact E.164"},
        "proxy_address": {**_E164, "description": "one of the gateway's numbers, exact E.164"},
        "channel": {"enum": [c.value for c in PHONE_CHANNELS], "default": "sms"},
        "attributes": nullable(_ATTRIBUTES),
    }, required=["address", "proxy_address"]),
    "MessageCreate": closed_object({
        "author": nullable({"type": "string", "description":
                             "a participant's id, identity or address; null: the API"}),
        "body": nullable({"type": "string"}),
        "media_url": {"type": "array", "maxItems": 10,
                      "items": {"type": "string", "format": "uri", "pattern": "^https?://"}},
        "attributes": nullable(_ATTRIBUTES),
    }, required=[]),
}


def _page(item: str) -> JSON:
    return closed_object({
        "data": {"type": "array", "items": ref(item)},
        "has_next": {"type": "boolean"},
        "has_prev": {"type": "boolean"},
        "next_page_token": nullable({"type": "string"}),
        "prev_page_token": nullable({"type": "string"}),
    })


def _link(operation: str, **parameters: str) -> JSON:
    return {"operationId": operation, "parameters": parameters}


_CONVERSATION_LINKS = {
    name: _link(op, ref="$response.body#/id") for name, op in [
        ("Fetch", "fetchConversation"), ("Update", "updateConversation"),
        ("Delete", "deleteConversation"), ("ListParticipants", "listParticipants"),
        ("AddParticipant", "addParticipant"), ("ListMessages", "listMessages"),
        ("SendMessage", "sendMessage")]
}
_PARTICIPANT_LINKS = {
    name: _link(op, ref="$response.body#/conversation_id",
                participant_id="$response.body#/id")
    for name, op in [("Fetch", "fetchParticipant"), ("Remove", "removeParticipant")]
}
_MESSAGE_LINKS = {"Fetch": _link("fetchMessage", ref="$response.body#/conversation_id",
                                 message_id="$response.body#/id")}

SCHEMAS.update(openapi_events.SCHEMAS)
SCHEMAS["ConversationPage"] = _page("Conversation")
SCHEMAS["MessagePage"] = _page("Message")

_ERROR_TEXT = {
    400: "Invalid input (invalid_parameter, invalid_body, invalid_page_token, "
         "invalid_address, invalid_identity, empty_message)",
    401: "No or invalid bearer token (missing_token, invalid_token)",
    403: "The API is disabled: no tokens configured (api_disabled)",
    404: "Not found (conversation_not_found, participant_not_found, message_not_found)",
    413: "The body is larger than the server accepts (body_too_large)",
    409: "Conflict (unique_name_taken, conversation_closed, invalid_state_transition, "
         "participant_exists, participant_pair_in_use)",
    422: "Refused (wallet_not_on_xmtp, proxy_address_not_ours, address_equals_proxy, "
         "identity_is_gateway, author_not_participant)",
    502: "The chat network (XMTP) failed (chat_network_error)",
}


def _responses(ok: int, ok_schema: JSON | None, *errors: int, description: str = "OK",
               links: JSON | None = None) -> JSON:
    found: JSON = {}
    if ok_schema is None:
        found[str(ok)] = {"description": description}
    else:
        found[str(ok)] = {"description": description,
                          "content": {"application/json": {"schema": ok_schema}}}
    if links:
        found[str(ok)]["links"] = links
    for status in sorted({400, 401, 403, *errors}):
        found[str(status)] = {"description": _ERROR_TEXT[status],
                              "content": {"application/json": {"schema": ref("Error")}}}
    return found


def _query(name: str, schema: JSON, description: str) -> JSON:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _path(name: str, description: str) -> JSON:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"},
            "description": description}


def _body(schema: JSON) -> JSON:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_REF = _path("ref", "the conversation's id (CH…) or its unique_name")
_PAGE_SIZE = {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": 50}
_CONSENT_LIST = {"type": "string",
                 "pattern": "^(" + "|".join(c.value for c in Consent) + ")(,("
                            + "|".join(c.value for c in Consent) + "))*$"}
_LIMIT = _query("limit", _PAGE_SIZE, "the same as page_size (SignalWire's name); not both")
_TIME_PARAM = {"type": "string", "description": "Unix seconds or ISO 8601"}
_SINCE = _query("since", _TIME_PARAM, "only messages created at or after this time")
_UNTIL = _query("until", _TIME_PARAM, "only messages created before this time")
_TOKEN = _query("page_token", {"type": "string"},
                "a next/prev token from an earlier page (it carries the filters)")

PATHS: JSON = {
    "/v1/conversations": {
        "get": {
            "operationId": "listConversations", "summary": "List conversations",
            "parameters": [
                _query("page_size", _PAGE_SIZE, "conversations per page"),
                _LIMIT,
                _TOKEN,
                _query("state", {"enum": [s.value for s in ConversationState]},
                       "only conversations in this state"),
                _query("consent", _CONSENT_LIST,
                       "only conversations with an active participant (not left) whose "
                       "consent is one of these (comma-separated: allowed, unknown, "
                       "denied)"),
            ],
            "responses": _responses(200, ref("ConversationPage")),
        },
        "post": {
            "operationId": "createConversation",
            "summary": "Create a conversation (and its XMTP group)",
            "requestBody": _body(ref("ConversationCreate")),
            "responses": _responses(201, ref("Conversation"), 409, 413, 502,
                                    description="Created", links=_CONVERSATION_LINKS),
        },
    },
    "/v1/conversations/{ref}": {
        "parameters": [_REF],
        "get": {"operationId": "fetchConversation", "summary": "Fetch a conversation",
                "responses": _responses(200, ref("Conversation"), 404)},
        "patch": {
            "operationId": "updateConversation",
            "summary": "Update names, attributes or state (active → inactive → closed)",
            "requestBody": _body(ref("ConversationUpdate")),
            "responses": _responses(200, ref("Conversation"), 404, 409, 413, 502),
        },
        "delete": {"operationId": "deleteConversation", "summary": "Delete a conversation",
                   "responses": _responses(204, None, 404, 502, description="Deleted")},
    },
    "/v1/conversations/{ref}/participants": {
        "parameters": [_REF],
        "get": {
            "operationId": "listParticipants", "summary": "List participants",
            "parameters": [_query("include_left", {"type": "boolean", "default": False},
                                  "also those who left")],
            "responses": _responses(200, ref("ParticipantList"), 404),
        },
        "post": {
            "operationId": "addParticipant",
            "summary": "Add a chat (wallet) or non-chat (phone) participant",
            "requestBody": _body({"oneOf": [ref("ChatParticipantCreate"),
                                            ref("PhoneParticipantCreate")]}),
            "responses": _responses(201, ref("Participant"), 404, 409, 413, 422, 502,
                                    description="Added", links=_PARTICIPANT_LINKS),
        },
    },
    "/v1/conversations/{ref}/participants/{participant_id}": {
        "parameters": [_REF, _path("participant_id", "the participant's id (MB…)")],
        "get": {"operationId": "fetchParticipant", "summary": "Fetch a participant",
                "responses": _responses(200, ref("Participant"), 404)},
        "delete": {"operationId": "removeParticipant",
                   "summary": "Remove a participant (a wallet leaves the group)",
                   "responses": _responses(204, None, 404, 502, description="Removed")},
    },
    "/v1/conversations/{ref}/messages": {
        "parameters": [_REF],
        "get": {
            "operationId": "listMessages", "summary": "List a conversation's messages",
            "parameters": [
                _query("page_size", _PAGE_SIZE, "messages per page"),
                _LIMIT,
                _query("order", {"enum": ["asc", "desc"], "default": "asc"},
                       "by index, ascending or descending"),
                _query("anchor", {"type": "integer", "minimum": 0, "maximum": MAX_INDEX},
                       "start at this message index (inclusive)"),
                _SINCE, _UNTIL, _TOKEN,
            ],
            "responses": _responses(200, ref("MessagePage"), 404),
        },
        "post": {
            "operationId": "sendMessage",
            "summary": "Send a message to every other participant on its own channel",
            "requestBody": _body(ref("MessageCreate")),
            "responses": _responses(201, ref("Message"), 404, 409, 413, 422,
                                    description="Recorded; deliveries are under way",
                                    links=_MESSAGE_LINKS),
        },
    },
    "/v1/conversations/{ref}/messages/{message_id}": {
        "parameters": [_REF, _path("message_id", "the message's id (IM…)")],
        "get": {"operationId": "fetchMessage",
                "summary": "Fetch a message with its delivery receipts",
                "responses": _responses(200, ref("Message"), 404)},
    },
    "/v1/messages": {
        "get": {
            "operationId": "listAllMessages",
            "summary": "Messages across conversations, oldest first",
            "parameters": [_query("page_size", _PAGE_SIZE, "messages per page"),
                           _LIMIT,
                           _SINCE, _UNTIL, _TOKEN],
            "responses": _responses(200, ref("MessagePage")),
        },
    },
    "/v1/events": {
        "get": {
            "operationId": "streamEvents",
            "summary": "The event log as server-sent events (resumable)",
            "description": "Each SSE carries `id` (resume with Last-Event-ID), `event` (the "
                           "type) and `data` (an Event as JSON). Without Last-Event-ID or "
                           "`after`, only new events are sent.",
            "parameters": [
                {"name": "Last-Event-ID", "in": "header", "required": False,
                 "schema": {"type": "integer", "minimum": 0, "maximum": MAX_INT64},
                 "description": "resume strictly after this event id"},
                _query("after", {"type": "integer", "minimum": 0, "maximum": MAX_INT64},
                       "like Last-Event-ID; 0 replays the whole log"),
                _query("conversation_id", {"type": "string"},
                       "only this conversation's events (its id or unique name)"),
                _query("types", {"type": "string"},
                       "comma-separated event types: " + ", ".join(EVENT_TYPES)),
                _query("consent", _CONSENT_LIST,
                       "only events of conversations that have, when the event is sent, "
                       "an active participant whose consent is one of these "
                       "(comma-separated: allowed, unknown, denied)"),
            ],
            "responses": {
                **_responses(200, None, 404),
                "200": {"description": openapi_events.STREAM_DESCRIPTION,
                        "content": openapi_events.STREAM_CONTENT},
            },
        },
    },
    "/v1/openapi.json": {
        "get": {"operationId": "openapi", "summary": "This document", "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1",
                                      "content": {"application/json": {
                                          "schema": {"type": "object"}}}}}},
    },
}

DOCUMENT: JSON = {
    "openapi": "3.1.0",
    "info": {
        "title": "Gateway Conversations API",
        "version": "1",
        "description": "Conversations between wallets (XMTP) and phones (SMS, WhatsApp), "
                       "shaped like Twilio Conversations. Errors are "
                       '`{"error": message, "code": stable_code}`.',
    },
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": SCHEMAS,
    },
    "paths": PATHS,
    "webhooks": {"event": openapi_events.WEBHOOK},
}


async def serve_document(request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)


def add_routes(app: web.Application, prefix: str) -> None:
    app.router.add_get(f"{prefix}/openapi.json", serve_document)
