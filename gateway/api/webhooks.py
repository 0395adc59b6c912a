"""Post-event webhooks: every event of the log is POSTed, as the JSON the event stream
carries, to each configured URL, signed and retried with backoff.

Each URL has its own follower task and its own cursor in the store, so a slow or dead
receiver delays only itself, never the relay (which only appends to the log) nor the
other receivers. Delivery is at least once: a receiver should dedupe on the event id.

Signature: ``X-Gateway-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``
with the configured secret; receivers recompute it and reject stale timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import Callable

import aiohttp

from gateway.api.hub import EventHub
from gateway.api.settings import WebhookSettings
from gateway.api.views import JSON
from gateway.domain.ports import ApiQueries, Store
from gateway.errors import StoreError

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Gateway-Signature"
BATCH = 100
_RETRYABLE_STATUSES = {408, 425, 429}


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, now: float, tolerance: float = 300) -> bool:
    """What a receiver does (and what the tests check the sender against)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


def cursor_key(url: str) -> str:
    return "webhook:" + hashlib.sha256(url.encode()).hexdigest()[:32]


class WebhookSender:
    def __init__(
        self, *, url: str, settings: WebhookSettings, store: Store, queries: ApiQueries,
        hub: EventHub, session: aiohttp.ClientSession, wall_clock: Callable[[], float],
        poll_interval: float,
    ) -> None:
        self._url = url
        self._settings = settings
        self._store = store
        self._queries = queries
        self._hub = hub
        self._session = session
        self._wall_clock = wall_clock
        self._poll_interval = poll_interval
        self.delivered = 0
        self.abandoned = 0

    async def run(self) -> None:
        """Follows the log until cancelled. A URL seen for the first time starts at the
        log's end: configuring a webhook does not replay history."""
        key = cursor_key(self._url)
        cursor: int | None = None
        while True:
            try:
                if cursor is None:
                    cursor = await self._starting_cursor(key)
                cursor = await self._follow(key, cursor)
            except StoreError as exc:
                # the database is away for now: try again shortly, from the stored cursor
                log.warning("webhook sender paused: %s", exc)
                await asyncio.sleep(self._poll_interval)

    async def _starting_cursor(self, key: str) -> int:
        async with self._store.transaction() as tx:
            stored = await tx.get_cursor(key)
        if stored is not None:
            return stored
        start = await self._queries.last_event_id()
        async with self._store.transaction() as tx:
            # kept at once, so events written before this URL's first post are not lost
            # to a restart
            await tx.set_cursor(key, start)
        return start

    async def _follow(self, key: str, cursor: int) -> int:
        """Posts what follows ``cursor`` in the log, then waits for more; returns the new
        cursor (stored after each event, so a restart resumes after the last one sent)."""
        signal = self._hub.signal()
        events = await self._queries.list_events(after=cursor, limit=BATCH)
        for rendered in await self._hub.render(events):
            await self._deliver(rendered)
            cursor = int(rendered["id"])
            async with self._store.transaction() as tx:
                await tx.set_cursor(key, cursor)
        if len(events) < BATCH:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signal.wait(), self._poll_interval)
        return cursor

    async def _deliver(self, rendered: JSON) -> None:
        body = json.dumps(rendered, separators=(",", ":")).encode()
        delay = self._settings.base_delay
        for attempt in range(1, self._settings.attempts + 1):
            if await self._post(rendered, body):
                self.delivered += 1
                return
            if attempt < self._settings.attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._settings.max_delay)
        self.abandoned += 1
        log.warning("webhook event %s abandoned after %d attempts", rendered["id"],
                    self._settings.attempts)

    async def _post(self, rendered: JSON, body: bytes) -> bool:
        """True when delivered; False when worth retrying. A 4xx other than timeouts and
        rate limits is the receiver refusing the event for good: counted as done."""
        headers = {"Content-Type": "application/json",
                   "X-Gateway-Event-Id": str(rendered["id"]),
                   "X-Gateway-Event-Type": str(rendered["type"])}
        if self._settings.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._settings.secret, int(self._wall_clock()),
                                             body)
        try:
            async with self._session.post(
                    self._url, data=body, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self._settings.timeout)) as resp:
                if resp.status < 300:
                    return True
                if 400 <= resp.status < 500 and resp.status not in _RETRYABLE_STATUSES:
                    log.warning("webhook refused event %s with HTTP %d", rendered["id"],
                                resp.status)
                    return True
                log.info("webhook answered HTTP %d for event %s; will retry", resp.status,
                         rendered["id"])
                return False
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("webhook post failed for event %s (%s); will retry", rendered["id"],
                     type(exc).__name__)
            return False
