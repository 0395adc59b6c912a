"""From the config to running media parts: the blob store, the fetcher, retention, the
media route (``install_media(app)``, called by ``create_app``), and the carrier the
delivery channels and the chat stream use (``media_carrier``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG
from gateway.config import GatewayConfig
from gateway.config.model import MediaConfig
from gateway.domain.clock import Clock
from gateway.domain.ports.blobs import BlobStore
from gateway.media.carrier import CarrySettings, MediaCarrier
from gateway.media.fetch import Credentials, FetchPolicy, MediaFetcher, twilio_credentials
from gateway.media.local_store import LocalBlobStore, MediaKeys
from gateway.media.retention import sweep_forever
from gateway.media.s3_store import S3BlobStore, S3Settings
from gateway.media.serve import LOCAL_MEDIA, add_media_routes
from gateway.media.transfer import MediaLimits

BLOB_STORE: web.AppKey[BlobStore] = web.AppKey("blob_store")
MEDIA_FETCHER: web.AppKey[MediaFetcher] = web.AppKey("media_fetcher")

RETENTION_EVERY = timedelta(hours=1)


def media_limits(media: MediaConfig) -> MediaLimits:
    return MediaLimits(max_item_bytes=media.max_item_bytes,
                       max_message_bytes=media.max_message_bytes, max_items=media.max_items,
                       content_types=media.content_types)


def fetch_policy(media: MediaConfig) -> FetchPolicy:
    """Types are checked by the callers (``MediaLimits``), after the redirects."""
    return FetchPolicy(max_bytes=media.max_item_bytes,
                       timeout_seconds=media.fetch_timeout_seconds,
                       allow_insecure=media.allow_insecure_urls)


def phone_media_credentials(config: GatewayConfig,
                            simulator_url: str | None = None) -> Credentials | None:
    """Twilio's credentials for its media URLs, also for a simulator's origin (the
    embedded one's URL, or ``twilio.api_base_url``). None without an auth token."""
    twilio = config.twilio
    if twilio.auth_token is None:
        return None
    origins = tuple(url for url in (simulator_url, twilio.api_base_url) if url)
    return twilio_credentials(twilio.account_sid, twilio.auth_token.get_secret_value(),
                              extra_origins=origins)


def carry_settings(config: GatewayConfig, simulator_url: str | None = None) -> CarrySettings:
    media = config.media
    links = timedelta(seconds=media.storage.url_ttl_seconds)
    return CarrySettings(
        limits=media_limits(media), inline_max_bytes=media.inline_max_bytes,
        group_url_ttl=links, phone_url_ttl=timedelta(seconds=media.phone_url_ttl_seconds),
        link_ttl=links, phone_credentials=phone_media_credentials(config, simulator_url),
        item_seconds=2 * media.fetch_timeout_seconds)


def media_carrier(app: web.Application, simulator_url: str | None = None) -> MediaCarrier:
    """The carrier over the app's blob store and fetcher (open once the media context
    has started); ``simulator_url``: an embedded Twilio simulator's, whose media URLs
    take the account's credentials."""
    return MediaCarrier(app[BLOB_STORE], app[MEDIA_FETCHER],
                        carry_settings(app[CONFIG], simulator_url))


@contextlib.asynccontextmanager
async def open_blob_store(config: GatewayConfig, clock: Clock) -> AsyncIterator[BlobStore]:
    storage = config.media.storage
    if storage.backend == "local":
        yield LocalBlobStore(
            storage.local.dir,
            MediaKeys.derive(config.database.key_bytes(), config.database.active_key),
            base_url=config.server.public_url, clock=clock)
        return
    s3 = storage.s3
    assert s3 is not None  # the config refuses backend s3 without its section
    settings = S3Settings(
        bucket=s3.bucket, prefix=s3.prefix, endpoint_url=s3.endpoint_url, region=s3.region,
        access_key_id=s3.access_key_id,
        secret_access_key=s3.secret_access_key.get_secret_value()
        if s3.secret_access_key else None,
        addressing_style=s3.addressing_style, timeout_seconds=config.media.fetch_timeout_seconds,
        server_side_encryption=None if s3.server_side_encryption == "bucket"
        else s3.server_side_encryption,
        kms_key_id=s3.kms_key_id)
    async with S3BlobStore(settings) as store:
        yield store


def install_media(app: web.Application) -> None:
    """The media route and a cleanup context that opens the blob store and the fetcher
    (``BLOB_STORE``, ``MEDIA_FETCHER``) and sweeps old media. Needs ``CONFIG`` and
    ``CLOCK`` on the app."""
    add_media_routes(app)
    app.cleanup_ctx.append(_media_context)


async def _media_context(app: web.Application) -> AsyncIterator[None]:
    config, clock = app[CONFIG], app[CLOCK]
    stop = asyncio.Event()
    async with open_blob_store(config, clock) as store, \
            MediaFetcher(fetch_policy(config.media)) as fetcher:
        app[BLOB_STORE] = store
        app[MEDIA_FETCHER] = fetcher
        if isinstance(store, LocalBlobStore):
            app[LOCAL_MEDIA] = store
        sweeper = asyncio.get_running_loop().create_task(sweep_forever(
            store, max_age=timedelta(days=config.media.retention_days), clock=clock,
            every=RETENTION_EVERY, stop=stop), name="media-retention")
        try:
            yield
        finally:
            stop.set()
            await sweeper
