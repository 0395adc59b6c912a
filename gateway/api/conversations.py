"""``/v1/conversations``: create, list (cursor-paged, by state), fetch by id or unique
name, update (names, attributes, state), delete."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.api import params
from gateway.api.errors import InvalidBody, InvalidPageToken
from gateway.api.keys import API_QUERIES, API_SERVICE
from gateway.api.pagination import (
    decode_token,
    listing_page_size,
    make_page,
    token_choice,
    window_from_token,
)
from gateway.api.refs import REF
from gateway.api.service import ConversationChanges
from gateway.api.views import conversation_json, page_json
from gateway.domain.models import Consent, Conversation, ConversationState
from gateway.domain.ports import Window

_FIELDS = {"friendly_name", "unique_name", "attributes"}


def conversation_key(c: Conversation) -> list[str]:
    return [c.created_at.isoformat(), c.id]


async def list_conversations(request: web.Request) -> web.Response:
    limit = listing_page_size(request.query)
    token = request.query.get("page_token")
    if token:
        payload = decode_token(token)
        window = window_from_token(payload, limit, key="time_id")
        state_raw = token_choice(payload, "state", {s.value for s in ConversationState})
        consent = _token_consent(payload)
    else:
        window = Window(start=None, limit=limit)
        state_raw = request.query.get("state")
        consent_raw = request.query.get("consent")
        consent = params.consent_filter(consent_raw) if consent_raw is not None else None
    state = (params.enum_value(ConversationState, state_raw, "state")
             if state_raw is not None else None)
    found = await request.app[API_QUERIES].list_conversations(window, state=state,
                                                              consent=consent)
    filters: dict[str, Any] = {}
    if state is not None:
        filters["state"] = state.value
    if consent is not None:
        filters["consent"] = sorted(c.value for c in consent)
    page = make_page(found, window, key_of=conversation_key, filters=filters)
    return web.json_response(page_json(page, [conversation_json(c) for c in page.items]))


def _token_consent(payload: dict[str, Any]) -> frozenset[Consent] | None:
    raw = payload.get("consent")
    if raw is None:
        return None
    if not (isinstance(raw, list) and raw and all(isinstance(v, str) for v in raw)):
        raise InvalidPageToken("page_token does not belong to this listing")
    try:
        return frozenset(Consent(v) for v in raw)
    except ValueError:
        raise InvalidPageToken("page_token does not belong to this listing") from None


async def create_conversation(request: web.Request) -> web.Response:
    body = await params.json_object(request, allowed=_FIELDS)
    conversation = await request.app[API_SERVICE].create_conversation(
        friendly_name=params.optional_name(body, "friendly_name"),
        unique_name=params.optional_unique_name(body),
        attributes=params.attributes(body))
    return web.json_response(conversation_json(conversation), status=201)


async def get_conversation(request: web.Request) -> web.Response:
    conversation = await request.app[API_SERVICE].get_conversation(request.match_info["ref"])
    return web.json_response(conversation_json(conversation))


async def update_conversation(request: web.Request) -> web.Response:
    body = await params.json_object(request, allowed=_FIELDS | {"state"})
    if not body:
        raise InvalidBody("nothing to update: give friendly_name, unique_name, attributes "
                          "or state")
    changes: dict[str, Any] = {}
    if "friendly_name" in body:
        changes["friendly_name"] = params.optional_name(body, "friendly_name")
    if "unique_name" in body:
        changes["unique_name"] = params.optional_unique_name(body)
    if "attributes" in body:
        changes["attributes"] = params.attributes(body)
    state = None
    if "state" in body:
        state = params.enum_value(ConversationState, body["state"], "state")
    conversation = await request.app[API_SERVICE].update_conversation(
        request.match_info["ref"],
        ConversationChanges(given=frozenset(body), state=state, **changes))
    return web.json_response(conversation_json(conversation))


async def delete_conversation(request: web.Request) -> web.Response:
    await request.app[API_SERVICE].delete_conversation(request.match_info["ref"])
    return web.Response(status=204)


def add_routes(app: web.Application, prefix: str) -> None:
    app.router.add_get(f"{prefix}/conversations", list_conversations)
    app.router.add_post(f"{prefix}/conversations", create_conversation)
    app.router.add_get(f"{prefix}/conversations/{REF}", get_conversation)
    app.router.add_patch(f"{prefix}/conversations/{REF}", update_conversation)
    app.router.add_delete(f"{prefix}/conversations/{REF}", delete_conversation)
