"""Where media is kept between networks: an MMS picture on its way to XMTP, a wallet's
file on its way to a phone.

A port like the others (the delivery engine will hold one, tests pass their own); two
implementations in ``gateway.media``: a local data directory (encrypted at rest, served
by the gateway under signed, expiring URLs) and S3-compatible object storage (several
gateway processes, presigned URLs). The same contract tests run against both.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

# Keys are chosen by the caller (so a retried upload lands on the same key) or made by
# ``new_blob_key``; either way they are path-like names the stores can use as is.
_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}(/[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}){0,3}")


def check_blob_key(key: str) -> str:
    """The key itself, or ValueError when it is not one: 1-4 segments of letters,
    digits, '.', '_', '-', no segment starting with '.'."""
    if not _KEY.fullmatch(key):
        raise ValueError(f"not a blob key: {key!r}")
    return key


def new_blob_key(prefix: str = "m") -> str:
    """An unguessable key (192 random bits) under ``prefix``."""
    return check_blob_key(f"{prefix}/{secrets.token_urlsafe(24)}")


@dataclass(frozen=True, slots=True)
class Blob:
    key: str
    content_type: str
    data: bytes = field(repr=False)
    created_at: datetime


class BlobStore(Protocol):
    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Stores ``data`` under ``key``, replacing what was there. Raises
        ``BlobStoreError`` when the storage fails."""

    async def get(self, key: str) -> Blob:
        """Raises ``BlobNotFound`` when nothing is stored under ``key``."""

    async def delete(self, key: str) -> None:
        """Removes ``key``; nothing happens when it is not there."""

    async def older_than(self, cutoff: datetime, *, limit: int = 1000) -> list[str]:
        """Up to ``limit`` keys stored before ``cutoff`` (for retention)."""

    async def url(self, key: str, *, ttl: timedelta) -> str:
        """A URL that serves the blob (with its content type) to anyone holding it,
        for ``ttl``; unguessable, and useless after it expires."""
