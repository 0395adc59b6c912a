"""Blobs in S3-compatible object storage (AWS S3, MinIO, R2, …), shared by several
gateway processes; URLs are presigned GETs (SigV4, at most 7 days).

Objects are encrypted at rest by the storage: every upload asks for it
(``ServerSideEncryption``, AES256 by default, or SSE-KMS), so a storage that cannot
encrypt refuses the upload rather than keeping the file in the clear; a presigned URL
serves the bytes directly to Twilio or an XMTP client. XMTP attachments are already
encrypted end to end before they get here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Literal, Self

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from gateway.domain.ports.blobs import Blob, check_blob_key
from gateway.errors import BlobNotFound, BlobStoreError, first_line

MAX_PRESIGN = timedelta(days=7)  # SigV4's limit
_MISSING = ("NoSuchKey", "404", "NotFound")
_ENCRYPTION_REFUSALS = ("NotImplemented", "InvalidArgument", "InvalidRequest")


@dataclass(frozen=True, slots=True)
class S3Settings:
    bucket: str
    prefix: str = "media/"
    endpoint_url: str | None = None  # None: AWS
    region: str = "us-east-1"
    access_key_id: str | None = None  # None (both): the default AWS credential chain
    secret_access_key: str | None = field(default=None, repr=False)
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    timeout_seconds: float = 30.0
    # ServerSideEncryption asked with every upload (None: the bucket's default applies)
    server_side_encryption: Literal["AES256", "aws:kms"] | None = "AES256"
    kms_key_id: str | None = None  # with aws:kms; None: the account's default key


@contextlib.contextmanager
def _storage_errors(action: str, key: str, *,
                    hint: Callable[[str], str] = lambda _code: "") -> Iterator[None]:
    """The storage's refusals as the blob store's errors; ``hint(code)``: what to add
    to the message for a code the caller can explain."""
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING:
            raise BlobNotFound(key) from None
        raise BlobStoreError(f"{action} {key}: {code or first_line(exc)}{hint(code)}") from exc
    except (BotoCoreError, OSError) as exc:
        raise BlobStoreError(f"{action} {key}: {first_line(exc)}") from exc


class S3BlobStore:
    """``async with S3BlobStore(settings) as store``: the client lives as long as that."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None

    async def __aenter__(self) -> Self:
        s = self.settings
        config = AioConfig(
            signature_version="s3v4", s3={"addressing_style": s.addressing_style},
            connect_timeout=s.timeout_seconds, read_timeout=s.timeout_seconds,
            retries={"max_attempts": 3, "mode": "standard"})
        async with contextlib.AsyncExitStack() as stack:
            self._client = await stack.enter_async_context(get_session().create_client(
                "s3", region_name=s.region, endpoint_url=s.endpoint_url,
                aws_access_key_id=s.access_key_id, aws_secret_access_key=s.secret_access_key,
                config=config))
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._client = self._stack = None

    def _name(self, key: str) -> str:
        return self.settings.prefix + check_blob_key(key)

    def _s3(self) -> Any:
        if self._client is None:
            raise RuntimeError("use S3BlobStore inside 'async with'")
        return self._client

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        s = self.settings
        encryption: dict[str, str] = {}
        if s.server_side_encryption is not None:
            encryption["ServerSideEncryption"] = s.server_side_encryption
            if s.kms_key_id is not None:
                encryption["SSEKMSKeyId"] = s.kms_key_id
        with _storage_errors("cannot store media", key, hint=self._encryption_hint):
            await self._s3().put_object(Bucket=s.bucket, Key=self._name(key), Body=data,
                                        ContentType=content_type, **encryption)

    def _encryption_hint(self, code: str) -> str:
        """For an upload refused with a code that may be the storage refusing the
        encryption it was asked for (MinIO without a KMS answers NotImplemented; others
        InvalidArgument, KMS.*): the setting to change."""
        asked = self.settings.server_side_encryption
        if asked is None or not (code in _ENCRYPTION_REFUSALS or code.startswith("KMS")):
            return ""
        return (f" (the upload asked for server-side encryption {asked}; if this storage "
                "cannot encrypt, or encrypts by itself, set "
                "media.storage.s3.server_side_encryption: bucket)")

    async def get(self, key: str) -> Blob:
        with _storage_errors("cannot read media", key):
            answer = await self._s3().get_object(Bucket=self.settings.bucket,
                                                 Key=self._name(key))
            async with answer["Body"] as body:
                data = await body.read()
        return Blob(key=key, content_type=answer.get("ContentType") or "application/octet-stream",
                    data=data, created_at=answer["LastModified"])

    async def delete(self, key: str) -> None:
        with _storage_errors("cannot delete media", key):
            await self._s3().delete_object(Bucket=self.settings.bucket, Key=self._name(key))

    async def older_than(self, cutoff: datetime, *, limit: int = 1000) -> list[str]:
        found: list[str] = []
        with _storage_errors("cannot list media", self.settings.prefix):
            async for item in self._objects():
                if item["LastModified"] < cutoff:
                    found.append(item["Key"][len(self.settings.prefix):])
                    if len(found) >= limit:
                        break
        return found

    async def _objects(self) -> AsyncIterator[dict[str, Any]]:
        pages = self._s3().get_paginator("list_objects_v2").paginate(
            Bucket=self.settings.bucket, Prefix=self.settings.prefix)
        async for page in pages:
            for item in page.get("Contents", []):
                yield item

    async def url(self, key: str, *, ttl: timedelta) -> str:
        seconds = int(min(ttl, MAX_PRESIGN).total_seconds())
        with _storage_errors("cannot sign a URL for", key):
            url: str = await self._s3().generate_presigned_url(
                "get_object", Params={"Bucket": self.settings.bucket, "Key": self._name(key)},
                ExpiresIn=max(seconds, 1))
        return url
