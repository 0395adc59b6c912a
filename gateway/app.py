"""``create_app``: the one place that wires the gateway together.

Every resource (database engine, Twilio HTTP client, embedded simulator and XMTP node,
XMTP client, background workers) is opened and closed in a ``cleanup_ctx`` generator,
in dependency order, and kept on the app under a typed key. Tests pass their own parts
(a store, a phone network, a chat network, a clock) and the app uses them as given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from gateway.api import add_api_routes
from gateway.api.keys import EVENT_HUB, WAKE_DELIVERIES
from gateway.appkeys import CHAT, CLOCK, CONFIG, METRICS, PHONE, RELAY, STORE, TASKS, WAKER
from gateway.config import GatewayConfig
from gateway.domain.clock import Clock, SystemClock
from gateway.domain.models import Channel
from gateway.domain.policy import OutboundPolicy
from gateway.domain.ports import ChatNetwork, DeliveryTaker, PhoneNetwork, Store
from gateway.domain.relay import Relay
from gateway.health import add_health_routes
from gateway.metrics import Metrics
from gateway.testing.twilio_sim import TwilioSimulator
from gateway.twilio.outbox import OutboxSettings, PhoneOutbox
from gateway.twilio.webhooks import MESSAGES_PATH, STATUS_PATH, add_twilio_routes
from gateway.workers import ChatDeliveryWorker, ChatStreamConsumer, Departures, Waker

log = logging.getLogger(__name__)

SIMULATOR: web.AppKey[TwilioSimulator] = web.AppKey("twilio_simulator")
OUTBOX: web.AppKey[PhoneOutbox] = web.AppKey("phone_outbox")
CHAT_DELIVERY: web.AppKey[ChatDeliveryWorker] = web.AppKey("chat_delivery")


@dataclass(frozen=True, slots=True)
class Parts:
    """Parts given from outside instead of built from the config (tests, the demo)."""

    store: Store | None = None
    phone: PhoneNetwork | None = None
    chat: ChatNetwork | None = None
    clock: Clock | None = None
    run_workers: bool = True


def create_app(config: GatewayConfig, parts: Parts | None = None) -> web.Application:
    parts = parts or Parts()
    app = web.Application(client_max_size=config.server.max_body_bytes)
    app[CONFIG] = config
    app[CLOCK] = parts.clock or SystemClock()
    app[METRICS] = Metrics()
    app[WAKER] = Waker()
    app[TASKS] = {}

    app.cleanup_ctx.append(_store_context(parts.store))
    app.cleanup_ctx.append(_phone_context(parts.phone))
    app.cleanup_ctx.append(_chat_context(parts.chat))
    app.cleanup_ctx.append(_relay_context)
    add_twilio_routes(app)
    add_health_routes(app)
    add_api_routes(app)  # its context needs STORE, CHAT and CLOCK: after theirs
    if parts.run_workers:
        app.cleanup_ctx.append(_workers_context)
    contexts = list(app.cleanup_ctx)
    app.cleanup_ctx.clear()
    app.cleanup_ctx.append(_all_or_nothing(contexts))
    return app


Context = Callable[[web.Application],
                   AsyncIterator[None] | contextlib.AbstractAsyncContextManager[None]]


def _all_or_nothing(contexts: Sequence[Context]) -> Callable[[web.Application],
                                                               AsyncIterator[None]]:
    """The contexts as one, entered in order and left in reverse. When one cannot start,
    those already started are closed before the error goes on: aiohttp closes contexts
    only after a startup that succeeded, and would leave them half-open to the loop's
    shutdown (an "asynchronous generator is already running" trace)."""
    async def context(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for each in contexts:
                opened = each(app)
                if not isinstance(opened, contextlib.AbstractAsyncContextManager):
                    opened = _generator_context(opened)
                await stack.enter_async_context(opened)
            yield

    return context


@contextlib.asynccontextmanager
async def _generator_context(generator: AsyncIterator[None]) -> AsyncIterator[None]:
    """A cleanup_ctx generator as a context manager: up to its yield, then the rest."""
    await anext(generator)
    try:
        yield
    finally:
        with contextlib.suppress(StopAsyncIteration):
            await anext(generator)
            raise RuntimeError("a cleanup context yielded more than once")


def _store_context(given: Store | None) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        if given is not None:
            app[STORE] = given
            yield
            return
        from gateway.store.sql import open_store

        database = app[CONFIG].database
        store = await open_store(database.url, keys=database.key_bytes(),
                                 active_key=database.active_key)
        app[STORE] = store
        try:
            yield
        finally:
            await store.close()

    return context


def _phone_context(given: PhoneNetwork | None) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        if given is not None:
            app[PHONE] = given
            yield
            return
        from gateway.twilio.sender import TwilioPhoneNetwork

        config = app[CONFIG]
        twilio = config.twilio
        token = twilio.auth_token.get_secret_value() if twilio.auth_token else ""
        async with contextlib.AsyncExitStack() as stack:
            base_url = str(twilio.api_base_url).rstrip("/") if twilio.api_base_url else None
            if twilio.simulator.embedded:
                simulator = TwilioSimulator(
                    account_sid=twilio.account_sid, auth_token=token,
                    webhook_url=config.server.public_url.rstrip("/") + MESSAGES_PATH,
                    port=twilio.simulator.port)
                await stack.enter_async_context(simulator.running())
                app[SIMULATOR] = simulator
                base_url = simulator.url
                log.info("embedded Twilio simulator at %s", simulator.url)
            # AsyncTwilioHttpClient opens its session in __init__: build it in the loop.
            phone = TwilioPhoneNetwork.create(
                account_sid=twilio.account_sid, auth_token=token, api_base_url=base_url,
                timeout=twilio.send_timeout_seconds)
            stack.push_async_callback(phone.close)
            app[PHONE] = phone
            yield

    return context


def _chat_context(given: ChatNetwork | None) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        if given is not None:
            app[CHAT] = given
            yield
            return
        from gateway.xmtp.network import ALLOW_NEW_INSTALLATION, open_chat_network

        async with open_chat_network(
                app[CONFIG],
                allow_new_installation=app.get(ALLOW_NEW_INSTALLATION, False)) as chat:
            app[CHAT] = chat
            yield

    return context


async def _relay_context(app: web.Application) -> AsyncIterator[None]:
    wake = _waking(app)
    app[RELAY] = Relay(app[STORE], app[CONFIG].rulebook(), app[CLOCK], wake=wake,
                       takers=lambda channel: _taker(app, channel))
    app[WAKE_DELIVERIES] = wake
    yield


def _taker(app: web.Application, channel: Channel) -> DeliveryTaker | None:
    """This process's worker for the channel, which takes what the relay claims at birth."""
    if channel is Channel.XMTP:
        return app.get(CHAT_DELIVERY)
    return app.get(OUTBOX)


def _waking(app: web.Application) -> Callable[[set[Channel]], None]:
    def wake(channels: set[Channel]) -> None:
        app[WAKER].wake(channels)
        outbox = app.get(OUTBOX)
        if outbox is not None and any(channel.is_phone for channel in channels):
            outbox.wake()
        hub = app.get(EVENT_HUB)
        if hub is not None:  # the relay wrote events: event streams read them now
            hub.notify()

    return wake


def outbox_settings(config: GatewayConfig) -> OutboxSettings:
    twilio = config.twilio
    return OutboxSettings(
        rate_per_second=twilio.rate_limits.default_per_second,
        rate_overrides=dict(twilio.rate_limits.numbers),
        max_attempts=twilio.retry.max_attempts,
        backoff_base=twilio.retry.base_delay_seconds,
        backoff_cap=twilio.retry.max_delay_seconds,
        send_timeout=twilio.send_timeout_seconds,
        lease=twilio.lease_seconds,
    )


def _stream_leadership(
        store: Store) -> Callable[[], contextlib.AbstractAsyncContextManager[None]] | None:
    """Exactly one process consumes the XMTP stream: the one holding this lock."""
    from gateway.store.leader import leadership
    from gateway.store.sql import SqlStore

    if not isinstance(store, SqlStore):
        return None
    return lambda: leadership(store.engine, "gateway.xmtp-stream")


async def _workers_context(app: web.Application) -> AsyncIterator[None]:
    config, store, relay, metrics = app[CONFIG], app[STORE], app[RELAY], app[METRICS]
    rules = config.rulebook()

    def policy_for(rule_name: str | None) -> OutboundPolicy:
        rule = rules.get(rule_name) if rule_name else None
        return rule.outbound if rule is not None else OutboundPolicy()

    def observe(outcome: str, seconds: float) -> None:
        metrics.deliveries.labels("phone", outcome).inc()
        if outcome == "sent":
            metrics.delivery_latency.labels("phone").observe(seconds)

    outbox = PhoneOutbox(
        store, app[PHONE], app[CLOCK], outbox_settings(config),
        status_callback_url=config.server.public_url.rstrip("/") + STATUS_PATH,
        policy_for=policy_for, render=relay.text_for_phone, on_failed=relay.delivery_failed,
        observer=observe)
    app[OUTBOX] = outbox
    chat_delivery = ChatDeliveryWorker(store, app[CHAT], relay, app[CLOCK], metrics, app[WAKER])
    app[CHAT_DELIVERY] = chat_delivery
    stream = ChatStreamConsumer(store, app[CHAT], relay, metrics,
                                departures=Departures(store, app[CLOCK], _waking(app)),
                                leadership=_stream_leadership(store))
    tasks = app[TASKS]
    tasks["phone_outbox"] = asyncio.create_task(outbox.run(), name="phone-outbox")
    tasks["chat_delivery"] = asyncio.create_task(chat_delivery.run(), name="chat-delivery")
    tasks["chat_stream"] = asyncio.create_task(stream.run(), name="chat-stream")
    try:
        yield
    finally:
        for task in tasks.values():
            task.cancel()
        for name, task in tasks.items():
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await task
                except Exception:  # shutting down: report how a worker ended, then go on
                    log.exception("worker %s ended with an error", name)
        tasks.clear()
