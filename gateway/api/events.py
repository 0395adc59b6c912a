"""``GET /v1/events``: the event log as server-sent events.

Resumable: each event carries its log id, and a reconnecting client sends the last one
it saw as ``Last-Event-ID`` (or ``?after=``); the stream continues strictly after it, so
nothing is missed or repeated. Without either, the stream starts at the log's end (new
events only); ``after=0`` replays the whole log.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiohttp import web

from gateway.api import params
from gateway.api.errors import InvalidParameter
from gateway.api.hub import EVENT_TYPES, EventHub
from gateway.api.keys import API_QUERIES, API_SERVICE, API_SETTINGS, EVENT_HUB
from gateway.domain.ids import ConversationId
from gateway.domain.models import Consent, Event
from gateway.domain.ports import ApiQueries
from gateway.errors import GatewayError

log = logging.getLogger(__name__)

BATCH = 200
RECONNECT_HINT_MS = 2000


def _start_after(request: web.Request) -> int | None:
    """Event ids are the log's 64-bit keys: a larger number is no id we could have sent
    (and the store could not compare against it)."""
    header = request.headers.get("Last-Event-ID")
    if header is not None and header.strip():
        return params.bounded_int(header, "Last-Event-ID")
    return params.query_int(request, "after")


def _types(request: web.Request) -> frozenset[str] | None:
    raw = request.query.get("types")
    if raw is None:
        return None
    wanted = frozenset(t.strip() for t in raw.split(",") if t.strip())
    unknown = wanted - set(EVENT_TYPES)
    if unknown or not wanted:
        raise InvalidParameter(f"types must be a comma-separated list of: "
                               f"{', '.join(EVENT_TYPES)}")
    return wanted


async def stream_events(request: web.Request) -> web.StreamResponse:
    queries = request.app[API_QUERIES]
    hub = request.app[EVENT_HUB]
    heartbeat = request.app[API_SETTINGS].heartbeat_interval
    raw_conversation = request.query.get("conversation_id")
    # an id or a unique name, as on every other route; an unknown one is a 404
    conversation_id = (await request.app[API_SERVICE].event_scope(raw_conversation)
                       if raw_conversation else None)
    types = _types(request)
    raw_consent = request.query.get("consent")
    consent = params.consent_filter(raw_consent) if raw_consent is not None else None
    after = _start_after(request)
    cursor = after if after is not None else await queries.last_event_id()

    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # tell nginx-style proxies not to buffer the stream
    })
    await response.prepare(request)
    # An id-only frame dispatches nothing but tells the client where it stands, so a
    # reconnect before the first event still resumes from here (SSE's lastEventId).
    try:
        await response.write(f"retry: {RECONNECT_HINT_MS}\nid: {cursor}\n\n".encode())
        await _follow(response, hub, queries, cursor,
                      Filters(conversation_id, types, consent), heartbeat)
    except ConnectionResetError:
        pass  # the subscriber went away
    except GatewayError as exc:
        # Headers are out, so no JSON error can follow: end the stream, and the client
        # resumes from its Last-Event-ID once the store is back.
        log.warning("event stream ended: %s (%s)", exc, exc.code)
    return response


@dataclass(frozen=True, slots=True)
class Filters:
    """What a subscriber asked for; None: everything."""

    conversation_id: ConversationId | None = None
    types: frozenset[str] | None = None
    consent: frozenset[Consent] | None = None


async def _follow(response: web.StreamResponse, hub: EventHub, queries: ApiQueries,
                  cursor: int, filters: Filters, heartbeat: float) -> None:
    while not hub.closing:
        signal = hub.signal()
        events = await hub.events_after(cursor, BATCH, filters.conversation_id, signal)
        if events:
            wanted = events
            if filters.consent is not None:
                wanted = await _with_consent(queries, events, filters.consent)
            frames = await hub.frames(wanted, filters.types) if wanted else b""
            if frames:
                await response.write(frames)
            cursor = events[-1].id
            if len(events) == BATCH:
                continue
        try:
            await asyncio.wait_for(signal.wait(), heartbeat)
        except TimeoutError:
            await response.write(b": keep-alive\n\n")


async def _with_consent(queries: ApiQueries, events: list[Event],
                        consent: frozenset[Consent]) -> list[Event]:
    """The events of conversations that, as the stream sends them, have an active
    participant with one of these consents (one query per batch)."""
    found = await queries.conversations_with_consent(
        {ConversationId(e.conversation_id) for e in events if e.conversation_id}, consent)
    return [e for e in events if e.conversation_id in found]


def add_routes(app: web.Application, prefix: str) -> None:
    app.router.add_get(f"{prefix}/events", stream_events)
