"""Blobs in a local directory, encrypted at rest, served by the gateway itself.

Each blob is one file, ``<dir>/<key>.blob``: a header naming the key it was sealed
with, then AES-256-GCM over its content type, time and bytes, with the blob's key as
associated data (a file renamed to another key does not open). The encryption keys are
derived (HKDF-SHA256) from the database's encryption keys, so media follows the same
rotation: a new active key seals new files, old keys still open old ones.

URLs point at the gateway (``media_routes``): ``<public_url>/media/<key>?e=<expiry>&k=
<key id>&s=<HMAC-SHA256>``, unguessable (the key has 192 random bits, the signature
256) and refused after their expiry. One process serves what it stores: for several
processes use S3-compatible storage.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.domain.clock import Clock, SystemClock
from gateway.domain.ports.blobs import Blob, check_blob_key
from gateway.errors import BlobNotFound, BlobStoreError

MEDIA_PATH = "/media"
_MAGIC = b"GWM1"
_SUFFIX = ".blob"


@dataclass(frozen=True, slots=True)
class MediaKeys:
    """Keys for files at rest and for URL signatures, per database key id."""

    at_rest: Mapping[str, bytes] = field(repr=False)
    signing: Mapping[str, bytes] = field(repr=False)
    active: str

    @classmethod
    def derive(cls, database_keys: Mapping[str, bytes], active: str) -> MediaKeys:
        if active not in database_keys:
            raise ValueError(f"active key {active!r} is not among the keys")

        def one(secret: bytes, purpose: bytes) -> bytes:
            return HKDF(algorithm=SHA256(), length=32, salt=None,
                        info=b"gateway media " + purpose).derive(secret)

        return cls(at_rest={k: one(v, b"at rest v1") for k, v in database_keys.items()},
                   signing={k: one(v, b"urls v1") for k, v in database_keys.items()},
                   active=active)


class LocalBlobStore:
    def __init__(self, root: Path, keys: MediaKeys, *, base_url: str,
                 clock: Clock | None = None) -> None:
        """``base_url``: the gateway's public URL (``server.public_url``)."""
        self.root = root
        self.keys = keys
        self.base_url = base_url.rstrip("/")
        self.clock = clock or SystemClock()

    # -- the port ---------------------------------------------------------------------

    # Sealing and opening a file of megabytes takes milliseconds of CPU: they run in the
    # same worker thread as the disk I/O, not on the loop that answers webhooks.

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        now = self.clock.now()

        def seal_and_write() -> None:
            _write_atomically(path, self._seal(key, content_type, data, now), now)

        try:
            await asyncio.to_thread(seal_and_write)
        except OSError as exc:
            raise BlobStoreError(f"cannot write media {key}: {exc.strerror or exc}") from exc

    async def get(self, key: str) -> Blob:
        path = self._path(key)

        def read_and_open() -> Blob:
            return self._open(key, path.read_bytes())

        try:
            return await asyncio.to_thread(read_and_open)
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        except OSError as exc:
            raise BlobStoreError(f"cannot read media {key}: {exc.strerror or exc}") from exc

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:
            raise BlobStoreError(f"cannot delete media {key}: {exc.strerror or exc}") from exc

    async def older_than(self, cutoff: datetime, *, limit: int = 1000) -> list[str]:
        return await asyncio.to_thread(self._older_than, cutoff.timestamp(), limit)

    async def url(self, key: str, *, ttl: timedelta) -> str:
        check_blob_key(key)
        expires = int((self.clock.now() + ttl).timestamp())
        signature = self._signature(self.keys.active, key, expires)
        return (f"{self.base_url}{MEDIA_PATH}/{quote(key)}"
                f"?e={expires}&k={self.keys.active}&s={signature}")

    # -- serving ----------------------------------------------------------------------

    def verify(self, key: str, expires: str, key_id: str, signature: str) -> int | None:
        """Seconds the URL is still good for, or None when it is not a URL we made or it
        has expired."""
        if key_id not in self.keys.signing or not re.fullmatch(r"[0-9]{1,12}", expires):
            return None
        try:
            check_blob_key(key)
        except ValueError:
            return None
        expected = self._signature(key_id, key, int(expires))
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            return None
        left = int(expires) - int(self.clock.now().timestamp())
        return left if left > 0 else None

    # -- internals --------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root / (check_blob_key(key) + _SUFFIX)

    def _signature(self, key_id: str, key: str, expires: int) -> str:
        mac = hmac.new(self.keys.signing[key_id], f"{key}\n{expires}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()

    def _seal(self, key: str, content_type: str, data: bytes, at: datetime) -> bytes:
        key_id = self.keys.active.encode()
        header = _MAGIC + bytes([len(key_id)]) + key_id
        meta = json.dumps({"type": content_type, "at": at.isoformat()}).encode()
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(self.keys.at_rest[self.keys.active]).encrypt(
            nonce, struct.pack(">I", len(meta)) + meta + data, header + key.encode())
        return header + nonce + sealed

    def _open(self, key: str, sealed: bytes) -> Blob:
        if sealed[:4] != _MAGIC or len(sealed) < 6:
            raise BlobStoreError(f"media {key} is not a sealed blob")
        end = 5 + sealed[4]
        key_id = sealed[5:end].decode("ascii", "replace")
        secret = self.keys.at_rest.get(key_id)
        if secret is None:
            raise BlobStoreError(f"media {key} is sealed with key {key_id!r}, not configured")
        try:
            plain = AESGCM(secret).decrypt(sealed[end:end + 12], sealed[end + 12:],
                                           sealed[:end] + key.encode())
        except InvalidTag:
            raise BlobStoreError(f"media {key} does not open: altered or misplaced") from None
        (size,) = struct.unpack(">I", plain[:4])
        meta = json.loads(plain[4:4 + size])
        return Blob(key=key, content_type=meta["type"], data=plain[4 + size:],
                    created_at=datetime.fromisoformat(meta["at"]))

    def _older_than(self, cutoff: float, limit: int) -> list[str]:
        found: list[str] = []
        if not self.root.is_dir():
            return found
        for directory, _dirs, files in os.walk(self.root):
            for name in files:
                if not name.endswith(_SUFFIX):
                    continue
                path = Path(directory, name)
                try:
                    if path.stat().st_mtime >= cutoff:
                        continue
                except FileNotFoundError:
                    continue  # deleted meanwhile
                found.append(path.relative_to(self.root).as_posix()[:-len(_SUFFIX)])
                if len(found) >= limit:
                    return found
        return found


def _write_atomically(path: Path, data: bytes, at: datetime) -> None:
    """Readers see the old file or the new one, never half of one; the file's time is
    the blob's (retention reads it without opening the file)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        stamp = at.astimezone(UTC).timestamp()
        os.utime(partial, (stamp, stamp))
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
