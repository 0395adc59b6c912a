"""The API's own application keys (the gateway-wide ones live in ``gateway.appkeys``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.api.hub import EventHub
    from gateway.api.service import ConversationService
    from gateway.api.settings import ApiSettings
    from gateway.domain.ports import ApiQueries

API_SETTINGS: web.AppKey[ApiSettings] = web.AppKey("api_settings")
API_QUERIES: web.AppKey[ApiQueries] = web.AppKey("api_queries")
API_SERVICE: web.AppKey[ConversationService] = web.AppKey("api_service")
EVENT_HUB: web.AppKey[EventHub] = web.AppKey("event_hub")
