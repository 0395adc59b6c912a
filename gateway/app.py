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
from gateway.api.keys import EVENT_HUB
from gateway.appkeys import CHAT, CLOCK, CONFIG, METRICS, PHONE, RELAY, STORE, TASKS
from gateway.config import GatewayConfig
from gateway.config.model import RetryConfig
from gateway.delivery import (
    Backoff,
    ChatChannel,
    EngineSettings,
    Holder,
    Outbox,
    Pacer,
    PacingSettings,
    PhoneChannel,
    PhoneSettings,
    holder_id_for,
)
from gateway.delivery.holder import HEARTBEAT_SECONDS, new_holder_id
from gateway.domain.clock import Clock, SystemClock
from gateway.domain.models import Channel, DeliveryJob
from gateway.domain.ports import ChatNetwork, DeliveryTaker, PhoneNetwork, Store
from gateway.domain.relay import Relay
from gateway.domain.writer import AfterCommit
from gateway.health import add_health_routes
from gateway.media.wiring import install_media, media_carrier
from gateway.metrics import Metrics
from gateway.store.leader import ProcessLock
from gateway.store.notify import Notifications
from gateway.testing.twilio_sim import TwilioSimulator
from gateway.twilio.webhooks import MESSAGES_PATH, STATUS_PATH, add_twilio_routes
from gateway.workers import ChatStreamConsumer, Describe, XmtpWork
from gateway.xmtp.budget import PacedChatNetwork, RefusalWatch, budget_settings, refusal_pause

log = logging.getLogger(__name__)

SIMULATOR: web.AppKey[TwilioSimulator] = web.AppKey("twilio_simulator")
PHONE_OUTBOX: web.AppKey[Outbox] = web.AppKey("phone_outbox")
CHAT_OUTBOX: web.AppKey[Outbox] = web.AppKey("chat_outbox")
HOLDER_ID: web.AppKey[str] = web.AppKey("outbox_holder_id")
# PostgreSQL's notifications between processes (None: SQLite, or a store given by a test)
NOTIFICATIONS: web.AppKey[Notifications | None] = web.AppKey("notifications")
# Held while this process does the XMTP work (None: it does none, or has no one to share
# the database with)
XMTP_LOCK: web.AppKey[ProcessLock | None] = web.AppKey("xmtp_lock")
# The XMTP process's write budget per gateway identity, shared by the chat engine and
# every other XMTP write (gateway.xmtp.budget), and the node's refusals libxmtp logged
XMTP_PACER: web.AppKey[Pacer] = web.AppKey("xmtp_pacer")
XMTP_REFUSALS: web.AppKey[RefusalWatch] = web.AppKey("xmtp_refusals")


@dataclass(frozen=True, slots=True)
class Parts:
    """Parts given from outside instead of built from the config (tests, the demo)."""

    store: Store | None = None
    phone: PhoneNetwork | None = None
    chat: ChatNetwork | None = None
    clock: Clock | None = None
    run_workers: bool = True
    # This process as an outbox holder. None: the id kept in data_dir (a restart takes
    # back what it held at once) when the store is the config's, a fresh one otherwise.
    holder_id: str | None = None


def create_app(config: GatewayConfig, parts: Parts | None = None) -> web.Application:
    parts = parts or Parts()
    app = web.Application(client_max_size=config.server.max_body_bytes)
    app[CONFIG] = config
    app[CLOCK] = parts.clock or SystemClock()
    app[METRICS] = Metrics()
    app[TASKS] = {}
    app[HOLDER_ID] = parts.holder_id or (holder_id_for(config.data_dir)
                                         if parts.store is None else new_holder_id())

    app.cleanup_ctx.append(_store_context(parts.store))
    app.cleanup_ctx.append(_notifications_context)
    app.cleanup_ctx.append(_phone_context(parts.phone))
    app.cleanup_ctx.append(_chat_context(parts.chat))
    app.cleanup_ctx.append(_relay_context)
    add_twilio_routes(app)
    add_health_routes(app)
    add_api_routes(app)  # its context needs STORE, CHAT and CLOCK: after theirs
    # Media: the blob store (encrypted at rest, swept after media.retention_days), the
    # fetcher for strangers' URLs and GET /media/… for the local store. The workers use
    # them (files both ways): before theirs.
    install_media(app)
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
    """The XMTP process (``xmtp.worker``) holds the XMTP lock, then opens its chat network
    (its installation), every write of which is paced by the identity's write budget;
    another process's chat network asks the XMTP process through the database
    (``gateway.xmtp.remote``) and is no installation."""
    async def context(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        app[XMTP_LOCK] = None
        if not config.xmtp.worker:
            app[CHAT] = _remote_chat(app)
            yield
            return
        lock = _xmtp_lock(app)
        if lock is not None:
            await lock.acquire()
            app[XMTP_LOCK] = lock
        pacer = app[XMTP_PACER] = Pacer(budget_settings(config.xmtp))
        app[METRICS].watch_write_budget(pacer)
        refusals = app[XMTP_REFUSALS] = RefusalWatch(app[METRICS].xmtp_rate_limited.inc)
        refusals.attach()

        def paced(chat: ChatNetwork) -> ChatNetwork:
            return PacedChatNetwork(chat, pacer, config.xmtp.wallet_address,
                                    max_wait=config.xmtp.send_timeout_seconds,
                                    refusals=refusals,
                                    refusal_pause=refusal_pause(config.xmtp))

        try:
            if given is not None:
                app[CHAT] = paced(given)
                yield
                return
            from gateway.xmtp.network import ALLOW_NEW_INSTALLATION, open_chat_network

            async with open_chat_network(
                    config, allow_new_installation=app.get(ALLOW_NEW_INSTALLATION, False),
                    ) as chat:
                app[CHAT] = paced(chat)
                yield
        finally:
            refusals.detach()
            if lock is not None:
                await lock.release()

    return context


def _xmtp_lock(app: web.Application) -> ProcessLock | None:
    """Exactly one process does the gateway identity's XMTP work: the one holding this."""
    from gateway.store.sql import SqlStore

    store = app[STORE]
    if not isinstance(store, SqlStore):
        return None
    return ProcessLock(store.engine, f"gateway.xmtp:{app[CONFIG].xmtp.wallet_address}",
                       holder_id=app[HOLDER_ID])


def _remote_chat(app: web.Application) -> ChatNetwork:
    from gateway.store.chat_requests import ChatRequests
    from gateway.store.leader import lock_is_held
    from gateway.store.notify import CHAT_ANSWERS, CHAT_REQUESTS
    from gateway.store.sql import SqlStore
    from gateway.xmtp.remote import RemoteChatNetwork

    store, notifications = app[STORE], app[NOTIFICATIONS]
    assert isinstance(store, SqlStore), "xmtp.worker: false needs the config's PostgreSQL"
    name = f"gateway.xmtp:{app[CONFIG].xmtp.wallet_address}"
    remote = RemoteChatNetwork(
        ChatRequests(store.engine), app[CLOCK], timeout=app[CONFIG].xmtp.send_timeout_seconds,
        anyone_serving=lambda: lock_is_held(store.engine, name),
        asked=(lambda: notifications.notify_soon(CHAT_REQUESTS)) if notifications else
        (lambda: None))
    if notifications is not None:
        notifications.on(CHAT_ANSWERS, remote.answered)
    return remote


async def _notifications_context(app: web.Application) -> AsyncIterator[None]:
    """Wake-ups between processes on one PostgreSQL database; polls are the fallback."""
    from gateway.store.notify import asyncpg_dsn
    from gateway.store.sql import SqlStore

    store = app[STORE]
    if not isinstance(store, SqlStore) or store.dialect != "postgresql":
        app[NOTIFICATIONS] = None
        yield
        return
    notifications = Notifications(asyncpg_dsn(store.engine.url),
                                  application_name=f"gateway {app[HOLDER_ID]} notify"[:63])
    app[NOTIFICATIONS] = notifications
    # listening starts with the workers, once every callback is registered
    yield


async def _relay_context(app: web.Application) -> AsyncIterator[None]:
    app[RELAY] = Relay(app[STORE], app[CONFIG].rulebook(), app[CLOCK],
                       wake=lambda after: _woken(app, after),
                       takers=lambda channel: _taker(app, channel))
    yield


def _taker(app: web.Application, channel: Channel) -> DeliveryTaker | None:
    """This process's engine for the channel, which takes what the relay claims at birth."""
    return app.get(CHAT_OUTBOX) if channel is Channel.XMTP else app.get(PHONE_OUTBOX)


def _woken(app: web.Application, after: AfterCommit) -> None:
    """After a relay transaction commits: the engines with new pending work look for it
    now, and event streams read the events it wrote."""
    for key, wanted in ((PHONE_OUTBOX, any(c.is_phone for c in after.channels)),
                        (CHAT_OUTBOX, Channel.XMTP in after.channels)):
        engine = app.get(key)
        if wanted and engine is not None:
            engine.wake()
    notifications = app.get(NOTIFICATIONS)
    if (Channel.XMTP in after.channels and notifications is not None
            and not app[CONFIG].xmtp.worker):
        from gateway.store.notify import CHAT_WORK

        notifications.notify_soon(CHAT_WORK)  # for the XMTP process's chat engine
    hub = app.get(EVENT_HUB)
    if hub is not None and after.events:
        hub.notify()


def _retry(config: RetryConfig) -> Backoff:
    return Backoff(base=config.base_delay_seconds, cap=config.max_delay_seconds,
                   max_attempts=config.max_attempts)


def phone_engine_settings(config: GatewayConfig) -> EngineSettings:
    twilio = config.twilio
    return EngineSettings(
        lease=twilio.lease_seconds, send_timeout=twilio.send_timeout_seconds,
        backoff=_retry(twilio.retry),
        pacing=PacingSettings(default=twilio.rate_limits.default_per_second,
                              rates=dict(twilio.rate_limits.numbers)))


def chat_engine_settings(config: GatewayConfig) -> EngineSettings:
    xmtp = config.xmtp
    return EngineSettings(lease=xmtp.lease_seconds, send_timeout=xmtp.send_timeout_seconds,
                          backoff=_retry(xmtp.retry), poll_interval=1.0)


def holder_alive_seconds(*engines: EngineSettings) -> float:
    """How long one heartbeat says this process lives: past its engines' longest send
    and margin by two beats, so a healthy process never has to beat again before a send
    (``Holder.lapsed``), and a dead one's work is free that long after its last beat."""
    longest = max(engine.send_timeout + engine.lease_margin for engine in engines)
    return longest + 2 * HEARTBEAT_SECONDS


def _xmtp_work(app: web.Application, chat: Outbox, describe: Describe) -> XmtpWork:
    """The XMTP process's work: posts, the stream, and other processes' chat requests."""
    store, relay, metrics = app[STORE], app[RELAY], app[METRICS]
    stream = ChatStreamConsumer(store, app[CHAT], relay, metrics, describe=describe)
    parts = [chat.run, stream.run]
    notifications = app[NOTIFICATIONS]
    if notifications is not None:
        from gateway.store.chat_requests import ChatRequests
        from gateway.store.notify import CHAT_ANSWERS, CHAT_REQUESTS, CHAT_WORK
        from gateway.store.sql import SqlStore
        from gateway.xmtp.remote import ChatRequestServer

        assert isinstance(store, SqlStore)
        server = ChatRequestServer(
            ChatRequests(store.engine), app[CHAT], app[CLOCK],
            answered=lambda request_id: notifications.notify_soon(CHAT_ANSWERS,
                                                                  str(request_id)))
        notifications.on(CHAT_WORK, lambda _payload: chat.wake())
        notifications.on(CHAT_REQUESTS, server.wake)
        parts.append(server.run)
    return XmtpWork(parts, lock=app[XMTP_LOCK], metrics=metrics)


async def _workers_context(app: web.Application) -> AsyncIterator[None]:
    config, store, relay, metrics, clock = (app[CONFIG], app[STORE], app[RELAY], app[METRICS],
                                            app[CLOCK])
    rules = config.rulebook()
    holder = Holder(store, clock, holder_id=app[HOLDER_ID],
                    alive_seconds=holder_alive_seconds(
                        phone_engine_settings(config), chat_engine_settings(config)))
    await holder.beat()
    released = await relay.release_held(holder.id)
    if released:
        log.info("took back %d deliveries this gateway held when it last stopped", released)

    def observe(engine: str) -> Callable[[str, DeliveryJob | None], None]:
        def observed(outcome: str, job: DeliveryJob | None) -> None:
            metrics.deliveries.labels(engine, outcome).inc()
            if outcome == "sent" and job is not None:
                metrics.delivery_latency.labels(engine).observe(
                    max((clock.now() - job.message.created_at).total_seconds(), 0.0))
        return observed

    simulator = app.get(SIMULATOR)
    media = media_carrier(app, simulator.url if simulator is not None else None)
    phone = Outbox(relay, PhoneChannel(
        store, app[PHONE], rules, clock, PhoneSettings(
            status_callback_url=config.server.public_url.rstrip("/") + STATUS_PATH),
        media=media),
        holder, clock, phone_engine_settings(config), observer=observe("phone"))
    app[PHONE_OUTBOX] = phone
    tasks = app[TASKS]
    tasks["outbox_holder"] = asyncio.create_task(holder.run(), name="outbox-holder")
    tasks["phone_outbox"] = asyncio.create_task(phone.run(), name="phone-outbox")
    if config.xmtp.worker:
        # the engine paces its posts and groups itself, in the budget the rest shares
        network = app[CHAT]
        if isinstance(network, PacedChatNetwork):
            network = network.inner
        refusals = app[XMTP_REFUSALS]
        chat = Outbox(relay, ChatChannel(
            store, network, rules, group_made=relay.group_made,
            send_timeout=config.xmtp.send_timeout_seconds, media=media, clock=clock,
            give_up_after=config.xmtp.retry.max_attempts,
            sender=config.xmtp.wallet_address, refusals=lambda: refusals.seen,
            refusal_pause=refusal_pause(config.xmtp)),
            holder, clock, chat_engine_settings(config), observer=observe("xmtp"),
            pacer=app[XMTP_PACER])
        app[CHAT_OUTBOX] = chat
        tasks["xmtp"] = asyncio.create_task(
            _xmtp_work(app, chat, media.describe).run(), name="xmtp-work")
    notifications = app[NOTIFICATIONS]
    if notifications is not None:
        tasks["notifications"] = asyncio.create_task(notifications.run(),
                                                     name="notifications")
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
