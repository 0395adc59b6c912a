"""Mounting the API on the gateway's app: routes under ``/v1``, its middlewares (scoped to
``/v1``), and one cleanup context that opens and closes what the API runs in the
background (the event hub's poll, the webhook senders)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from gateway.api import conversations, events, messages, openapi, participants
from gateway.api.auth import auth_middleware
from gateway.api.errors import API_PREFIX, error_middleware
from gateway.api.hub import EventHub
from gateway.api.keys import API_QUERIES, API_SERVICE, API_SETTINGS, EVENT_HUB
from gateway.api.service import ConversationService
from gateway.api.settings import ApiSettings
from gateway.api.webhooks import WebhookSender
from gateway.appkeys import CHAT, CLOCK, CONFIG, RELAY, STORE


def add_api_routes(app: web.Application) -> None:
    """Expects STORE, CHAT, CLOCK and RELAY (which records what the API sends) on the
    app by startup, and CONFIG unless API_SETTINGS was set directly. API_QUERIES
    defaults to the SQL store's queries."""
    # error handling wraps authentication, which refuses by raising
    app.middlewares.extend([error_middleware, auth_middleware])
    for module in (conversations, participants, messages, events, openapi):
        module.add_routes(app, API_PREFIX)
    app.cleanup_ctx.append(_api_context)
    app.on_shutdown.append(_end_streams)


async def _api_context(app: web.Application) -> AsyncIterator[None]:
    if API_SETTINGS not in app:
        app[API_SETTINGS] = ApiSettings.from_config(app[CONFIG])
    settings = app[API_SETTINGS]
    own_queries = API_QUERIES not in app
    if own_queries:
        from gateway.store.queries import queries_for  # the SQL store, only when used

        app[API_QUERIES] = queries_for(app[STORE])
    store, queries = app[STORE], app[API_QUERIES]
    hub = EventHub(store=store, queries=queries, poll_interval=settings.event_poll_interval)
    app[EVENT_HUB] = hub
    app[API_SERVICE] = ConversationService(
        store=store, queries=queries, chat=app[CHAT], clock=app[CLOCK],
        routes=settings.routes, gateway_wallet=settings.gateway_wallet, hub=hub,
        relay=app[RELAY])

    tasks = [asyncio.create_task(hub.poll(), name="api-event-poll")]
    session = None
    if settings.webhooks.urls:
        session = aiohttp.ClientSession()
        for url in settings.webhooks.urls:
            sender = WebhookSender(url=url, settings=settings.webhooks, store=store,
                                   queries=queries, hub=hub, session=session,
                                   wall_clock=time.time,
                                   poll_interval=settings.event_poll_interval)
            tasks.append(asyncio.create_task(sender.run(), name="api-webhook"))
    try:
        yield
    finally:
        hub.close()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if session is not None:
            await session.close()
        if own_queries:
            await queries.close()


async def _end_streams(app: web.Application) -> None:
    """Open event streams end before the server waits for its handlers to finish."""
    hub = app.get(EVENT_HUB)
    if hub is not None:
        hub.close()
