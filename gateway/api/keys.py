"""The API's own application keys (the gateway-wide ones live in ``gateway.appkeys``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.domain.models import Channel

if TYPE_CHECKING:
    from gateway.api.hub import EventHub
    from gateway.api.service import ConversationService
    from gateway.api.settings import ApiSettings
    from gateway.domain.ports import ApiQueries

API_SETTINGS: web.AppKey[ApiSettings] = web.AppKey("api_settings")
API_QUERIES: web.AppKey[ApiQueries] = web.AppKey("api_queries")
API_SERVICE: web.AppKey[ConversationService] = web.AppKey("api_service")
EVENT_HUB: web.AppKey[EventHub] = web.AppKey("event_hub")
WAKE_DELIVERIES: web.AppKey[Callable[[set[Channel]], None]] = web.AppKey("wake_deliveries")
"""Optional: called after the API records a message, so delivery workers start at once."""
