"""One blob-store contract, both stores: the local data directory (served by the
gateway's media route on 127.0.0.1) and S3-compatible storage (a moto server these tests
start on 127.0.0.1, spoken to over HTTP like any S3)."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import boto3
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from moto.server import ThreadedMotoServer

from gateway.config import parse_config
from gateway.domain.clock import ManualClock, SystemClock
from gateway.domain.ports.blobs import BlobStore, new_blob_key
from gateway.errors import BlobNotFound, BlobStoreError, ConfigError
from gateway.media.local_store import LocalBlobStore, MediaKeys
from gateway.media.retention import sweep
from gateway.media.s3_store import S3BlobStore, S3Settings
from gateway.media.serve import LOCAL_MEDIA, add_media_routes
from gateway.media.wiring import open_blob_store
from tests.unit.config_fixtures import minimal

DATABASE_KEYS = {"k1": base64.b64decode(base64.b64encode(b"k" * 32))}
PICTURE = b"\xff\xd8\xff\xe0" + secrets.token_bytes(3000)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _s3_settings(endpoint: str, bucket: str) -> S3Settings:
    return S3Settings(bucket=bucket, prefix="media/", endpoint_url=endpoint,
                      region="us-east-1", access_key_id="testing",
                      secret_access_key="testing", addressing_style="path")


async def _local_store(tmp_path: Path) -> AsyncIterator[BlobStore]:
    store = LocalBlobStore(tmp_path / "media", MediaKeys.derive(DATABASE_KEYS, "k1"),
                           base_url="http://unset")
    app = web.Application()
    app[LOCAL_MEDIA] = store
    add_media_routes(app)
    async with TestServer(app, host="127.0.0.1") as server:
        store.base_url = str(server.make_url("")).rstrip("/")
        yield store


async def _s3_store(endpoint: str) -> AsyncIterator[BlobStore]:
    bucket = f"media-{secrets.token_hex(6)}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=bucket)
    async with S3BlobStore(_s3_settings(endpoint, bucket)) as store:
        yield store


@pytest.fixture(params=["local", "s3"])
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        opened = _local_store(tmp_path)
    else:
        opened = _s3_store(request.getfixturevalue("moto_endpoint"))
    async for store in opened:
        yield store


class TestBlobStoreContract:
    async def test_what_is_put_comes_back_with_its_content_type(self, blobs: BlobStore) -> None:
        key = new_blob_key()
        before = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
        await blobs.put(key, PICTURE, "image/jpeg")
        blob = await blobs.get(key)
        assert (blob.key, blob.data, blob.content_type) == (key, PICTURE, "image/jpeg")
        assert before <= blob.created_at <= datetime.now(UTC) + timedelta(seconds=1)

    async def test_a_missing_key_is_not_found(self, blobs: BlobStore) -> None:
        with pytest.raises(BlobNotFound):
            await blobs.get(new_blob_key())

    async def test_put_replaces_what_the_key_held(self, blobs: BlobStore) -> None:
        key = new_blob_key()
        await blobs.put(key, b"one", "text/plain")
        await blobs.put(key, b"two", "application/pdf")
        blob = await blobs.get(key)
        assert (blob.data, blob.content_type) == (b"two", "application/pdf")

    async def test_delete_removes_and_deleting_twice_is_fine(self, blobs: BlobStore) -> None:
        key = new_blob_key()
        await blobs.put(key, PICTURE, "image/jpeg")
        await blobs.delete(key)
        await blobs.delete(key)
        with pytest.raises(BlobNotFound):
            await blobs.get(key)

    async def test_an_empty_blob_and_a_megabyte_blob_both_keep(self, blobs: BlobStore) -> None:
        big = secrets.token_bytes(1024 * 1024)
        await blobs.put("in/empty", b"", "application/octet-stream")
        await blobs.put("in/big", big, "video/mp4")
        assert (await blobs.get("in/empty")).data == b""
        assert (await blobs.get("in/big")).data == big

    async def test_keys_that_are_not_keys_are_refused(self, blobs: BlobStore) -> None:
        for key in ("../etc/passwd", "a/../../b", "/abs", ".hidden", "a//b", "", "a b"):
            with pytest.raises(ValueError, match="not a blob key"):
                await blobs.put(key, b"x", "text/plain")

    async def test_older_than_lists_what_was_stored_before_the_cutoff(
            self, blobs: BlobStore) -> None:
        keys = [new_blob_key() for _ in range(3)]
        for key in keys:
            await blobs.put(key, b"x", "text/plain")
        now = datetime.now(UTC)
        assert await blobs.older_than(now - timedelta(hours=1)) == []
        assert sorted(await blobs.older_than(now + timedelta(hours=1))) == sorted(keys)
        assert len(await blobs.older_than(now + timedelta(hours=1), limit=2)) == 2

    async def test_a_retention_sweep_deletes_what_is_past_its_age(self, blobs: BlobStore) -> None:
        keys = [new_blob_key() for _ in range(5)]
        for key in keys:
            await blobs.put(key, b"x", "text/plain")
        today = ManualClock(datetime.now(UTC))
        assert await sweep(blobs, max_age=timedelta(days=1), clock=today) == 0
        later = ManualClock(datetime.now(UTC) + timedelta(days=2))
        assert await sweep(blobs, max_age=timedelta(days=1), clock=later, batch=2) == 5
        assert await blobs.older_than(later.now()) == []

    async def test_its_url_serves_the_bytes_and_content_type(self, blobs: BlobStore) -> None:
        key = new_blob_key()
        await blobs.put(key, PICTURE, "image/jpeg")
        url = await blobs.url(key, ttl=timedelta(minutes=10))
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            assert response.status == 200
            assert response.content_type == "image/jpeg"
            assert await response.read() == PICTURE

    async def test_urls_of_two_keys_are_unrelated(self, blobs: BlobStore) -> None:
        one, two = new_blob_key(), new_blob_key()
        first = await blobs.url(one, ttl=timedelta(minutes=10))
        second = await blobs.url(two, ttl=timedelta(minutes=10))
        assert one.split("/")[-1] in first and one.split("/")[-1] not in second


class TestOpenedFromTheConfig:
    async def test_backend_s3_opens_the_configured_bucket(self, moto_endpoint: str,
                                                          tmp_path: Path) -> None:
        boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                     aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket="gateway-media")
        raw = minimal()
        raw["media"] = {"storage": {"backend": "s3", "s3": {
            "bucket": "gateway-media", "prefix": "gw/", "endpoint_url": moto_endpoint,
            "access_key_id": "testing", "secret_access_key": "testing-secret",
            "addressing_style": "path"}}}
        config = parse_config(raw, base_dir=tmp_path, persist_secrets=False)
        async with open_blob_store(config, SystemClock()) as store:
            assert isinstance(store, S3BlobStore)
            await store.put("in/x", b"x", "text/plain")
            assert (await store.get("in/x")).data == b"x"
            assert "/gateway-media/gw/in/x" in await store.url("in/x", ttl=timedelta(hours=1))


class TestS3EncryptionAtRest:
    @staticmethod
    def _bucket(endpoint: str) -> tuple[Any, str]:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        bucket = f"media-{secrets.token_hex(6)}"
        s3.create_bucket(Bucket=bucket)
        return s3, bucket

    @pytest.mark.parametrize(("asked", "kms_key", "rests"), [
        ("AES256", None, "AES256"),
        ("aws:kms", "arn:aws:kms:us-east-1:000000000000:key/gateway", "aws:kms"),
        ("bucket", None, None)])
    async def test_every_upload_asks_for_the_configured_encryption(
            self, moto_endpoint: str, tmp_path: Path, asked: str, kms_key: str | None,
            rests: str | None) -> None:
        s3, bucket = self._bucket(moto_endpoint)
        raw = minimal()
        raw["media"] = {"storage": {"backend": "s3", "s3": {
            "bucket": bucket, "endpoint_url": moto_endpoint, "access_key_id": "testing",
            "secret_access_key": "testing", "addressing_style": "path",
            "server_side_encryption": asked, "kms_key_id": kms_key}}}
        config = parse_config(raw, base_dir=tmp_path, persist_secrets=False)
        async with open_blob_store(config, SystemClock()) as store:
            await store.put("in/x", PICTURE, "image/jpeg")
        head = s3.head_object(Bucket=bucket, Key="media/in/x")
        assert head.get("ServerSideEncryption") == rests
        if kms_key is not None:
            assert head["SSEKMSKeyId"].endswith("key/gateway")

    def test_the_default_asks_for_aes256_and_a_kms_key_needs_kms(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["media"] = {"storage": {"backend": "s3", "s3": {"bucket": "gateway-media"}}}
        storage = parse_config(raw, base_dir=tmp_path, persist_secrets=False).media.storage
        assert storage.s3 is not None and storage.s3.server_side_encryption == "AES256"
        raw["media"]["storage"]["s3"]["kms_key_id"] = "alias/gateway"
        with pytest.raises(ConfigError, match="kms_key_id needs server_side_encryption"):
            parse_config(raw, base_dir=tmp_path, persist_secrets=False)

    async def test_a_storage_refusing_encryption_is_told_how_to_go_on(self) -> None:
        """MinIO without a KMS refuses SSE with NotImplemented: the error says which
        setting to change, and the file is not stored unencrypted meanwhile."""
        async def refuse(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(status=501, content_type="application/xml", text=(
                "<?xml version='1.0' encoding='UTF-8'?><Error><Code>NotImplemented</Code>"
                "<Message>Server side encryption specified but KMS is not configured"
                "</Message></Error>"))

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", refuse)
        async with TestServer(app, host="127.0.0.1") as server:
            settings = _s3_settings(str(server.make_url("")).rstrip("/"), "gateway-media")
            async with S3BlobStore(settings) as store:
                with pytest.raises(BlobStoreError, match=r"NotImplemented.*"
                                   r"server_side_encryption: bucket"):
                    await store.put("in/x", PICTURE, "image/jpeg")


class TestS3LinksExpire:
    async def test_a_link_asks_for_its_ttl_and_never_past_sigv4s_week(
            self, moto_endpoint: str) -> None:
        """What a presigned link asks the storage for (moto serves expired links, so
        the expiry itself is the storage's to enforce, as S3 does)."""
        async for store in _s3_store(moto_endpoint):
            hour = await store.url("in/x", ttl=timedelta(hours=1))
            month = await store.url("in/x", ttl=timedelta(days=30))
            instant = await store.url("in/x", ttl=timedelta(0))
        expires = [parse_qs(urlsplit(url).query)["X-Amz-Expires"] for url in
                   (hour, month, instant)]
        assert expires == [["3600"], [str(7 * 86400)], ["1"]]
