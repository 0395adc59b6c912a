"""Messages: ``/v1/conversations/{ref}/messages`` (send, list by index, fetch one with
its delivery receipts) and ``/v1/messages`` (across conversations, by time)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.api import params
from gateway.api.errors import InvalidParameter
from gateway.api.keys import API_QUERIES, API_SERVICE
from gateway.api.pagination import (
    MAX_INDEX,
    decode_token,
    listing_page_size,
    make_page,
    token_choice,
    token_time,
    window_from_token,
)
from gateway.api.refs import REF
from gateway.api.views import message_json, page_json
from gateway.domain.models import Message
from gateway.domain.ports import TimeRange, Window


def _token_period(payload: dict[str, Any]) -> TimeRange:
    return TimeRange(since=token_time(payload, "since"), until=token_time(payload, "until"))


def _period_filters(period: TimeRange) -> dict[str, str]:
    found = {}
    if period.since is not None:
        found["since"] = period.since.isoformat()
    if period.until is not None:
        found["until"] = period.until.isoformat()
    return found


def _requested_period(request: web.Request) -> TimeRange:
    period = TimeRange(since=params.query_time(request, "since"),
                       until=params.query_time(request, "until"))
    if period.since and period.until and period.since > period.until:
        raise InvalidParameter("since must not be after until")
    return period


async def list_messages(request: web.Request) -> web.Response:
    conversation = await request.app[API_SERVICE].get_conversation(request.match_info["ref"])
    limit = listing_page_size(request.query)
    token = request.query.get("page_token")
    if token:
        payload = decode_token(token)
        window = window_from_token(payload, limit, key="index")
        descending = token_choice(payload, "o", ("asc", "desc")) == "desc"
        period = _token_period(payload)
    else:
        order = request.query.get("order", "asc")
        if order not in ("asc", "desc"):
            raise InvalidParameter("order must be asc or desc")
        descending = order == "desc"
        anchor = params.query_int(request, "anchor", maximum=MAX_INDEX)
        window = Window(start=anchor, limit=limit, inclusive=anchor is not None)
        period = _requested_period(request)
    found = await request.app[API_QUERIES].list_messages(
        conversation.id, window, descending=descending, period=period)
    page = make_page(found, window, key_of=lambda m: m.index,
                     filters={"o": "desc" if descending else "asc", **_period_filters(period)})
    return web.json_response(page_json(page, [message_json(m) for m in page.items]))


def _message_key(m: Message) -> list[str]:
    return [m.created_at.isoformat(), m.id]


async def list_all_messages(request: web.Request) -> web.Response:
    limit = listing_page_size(request.query)
    token = request.query.get("page_token")
    if token:
        payload = decode_token(token)
        window = window_from_token(payload, limit, key="time_id")
        period = _token_period(payload)
    else:
        window = Window(start=None, limit=limit)
        period = _requested_period(request)
    found = await request.app[API_QUERIES].list_all_messages(window, period=period)
    page = make_page(found, window, key_of=_message_key, filters=_period_filters(period))
    return web.json_response(page_json(page, [message_json(m) for m in page.items]))


async def send_message(request: web.Request) -> web.Response:
    body = await params.json_object(
        request, allowed={"author", "body", "media_url", "attributes"})
    message = await request.app[API_SERVICE].send_message(
        request.match_info["ref"], author=params.optional_text(body, "author"),
        body=params.optional_text(body, "body"),
        media_urls=params.string_list(body, "media_url"),
        attributes=params.attributes(body))
    return web.json_response(message_json(message), status=201)


async def get_message(request: web.Request) -> web.Response:
    message, receipts = await request.app[API_SERVICE].get_message(
        request.match_info["ref"], request.match_info["message_id"])
    return web.json_response(message_json(message, receipts))


def add_routes(app: web.Application, prefix: str) -> None:
    base = f"{prefix}/conversations/{REF}/messages"
    app.router.add_get(base, list_messages)
    app.router.add_post(base, send_message)
    app.router.add_get(f"{base}/{{message_id}}", get_message)
    app.router.add_get(f"{prefix}/messages", list_all_messages)
