"""Typed application keys: all shared state lives on the aiohttp app under these."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.domain.clock import Clock
    from gateway.domain.ports import ChatNetwork, PhoneNetwork, Store
    from gateway.domain.relay import Relay
    from gateway.metrics import Metrics

CONFIG: web.AppKey[GatewayConfig] = web.AppKey("config")
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
STORE: web.AppKey[Store] = web.AppKey("store")
RELAY: web.AppKey[Relay] = web.AppKey("relay")
PHONE: web.AppKey[PhoneNetwork] = web.AppKey("phone")
CHAT: web.AppKey[ChatNetwork] = web.AppKey("chat")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
TASKS: web.AppKey[dict[str, asyncio.Task[None]]] = web.AppKey("tasks")
