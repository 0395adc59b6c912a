"""Media is kept for ``media.retention_days`` and then deleted, whichever store holds it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from gateway.domain.clock import Clock
from gateway.domain.ports.blobs import BlobStore
from gateway.errors import MediaError

log = logging.getLogger(__name__)

_MAX_ROUNDS = 1000  # a sweep ends even if a store kept listing what it was told to delete


async def sweep(store: BlobStore, *, max_age: timedelta, clock: Clock,
                batch: int = 500) -> int:
    """Deletes every blob older than ``max_age``; returns how many."""
    cutoff = clock.now() - max_age
    deleted = 0
    for _round in range(_MAX_ROUNDS):
        keys = await store.older_than(cutoff, limit=batch)
        for key in keys:
            await store.delete(key)
        deleted += len(keys)
        if len(keys) < batch:
            break
    return deleted


async def sweep_forever(store: BlobStore, *, max_age: timedelta, clock: Clock,
                        every: timedelta, stop: asyncio.Event) -> None:
    """Sweeps now and then every ``every`` until ``stop`` is set (a cleanup context's
    task). A failed sweep is logged and tried again next time: media past its age is
    not urgent, and the store's error says what is wrong."""
    while not stop.is_set():
        try:
            deleted = await sweep(store, max_age=max_age, clock=clock)
        except MediaError as exc:
            log.warning("media retention sweep failed: %s", exc)
        else:
            if deleted:
                log.info("media retention: deleted %d item(s) older than %s", deleted, max_age)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every.total_seconds())
