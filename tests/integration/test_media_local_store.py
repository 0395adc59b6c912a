"""The local blob store: what it keeps on disk, and the signed URLs the gateway serves."""

from __future__ import annotations

import secrets
import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from gateway.domain.clock import ManualClock
from gateway.domain.ports.blobs import new_blob_key
from gateway.errors import BlobStoreError
from gateway.media.local_store import LocalBlobStore, MediaKeys
from gateway.media.retention import sweep
from gateway.media.serve import LOCAL_MEDIA, add_media_routes

KEYS = {"k1": secrets.token_bytes(32), "k2": secrets.token_bytes(32)}
PICTURE = b"\xff\xd8\xff\xe0 a picture of a cat " + secrets.token_bytes(500)


class Served:
    def __init__(self, store: LocalBlobStore, clock: ManualClock) -> None:
        self.store = store
        self.clock = clock

    async def get(self, url: str) -> tuple[int, bytes, dict[str, str]]:
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            return response.status, await response.read(), dict(response.headers)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    clock = ManualClock(datetime.now(UTC))
    store = LocalBlobStore(tmp_path / "media", MediaKeys.derive(KEYS, "k1"),
                           base_url="http://unset", clock=clock)
    app = web.Application()
    app[LOCAL_MEDIA] = store
    add_media_routes(app)
    async with TestServer(app, host="127.0.0.1") as server:
        store.base_url = str(server.make_url("")).rstrip("/")
        yield Served(store, clock)


class TestAtRest:
    async def test_files_hold_no_plaintext_and_only_the_owner_reads_them(
            self, served: Served) -> None:
        await served.store.put("in/cat", PICTURE, "image/jpeg")
        [file] = list(served.store.root.rglob("*.blob"))
        raw = file.read_bytes()
        assert b"a picture of a cat" not in raw and b"image/jpeg" not in raw
        assert stat.S_IMODE(file.stat().st_mode) == 0o600

    async def test_a_file_moved_to_another_key_does_not_open(self, served: Served) -> None:
        await served.store.put("in/one", PICTURE, "image/jpeg")
        root = served.store.root
        (root / "in" / "one.blob").rename(root / "in" / "two.blob")
        with pytest.raises(BlobStoreError, match="altered or misplaced"):
            await served.store.get("in/two")

    async def test_media_sealed_before_a_key_rotation_still_opens(self, served: Served) -> None:
        await served.store.put("in/old", PICTURE, "image/jpeg")
        old_url = await served.store.url("in/old", ttl=timedelta(hours=1))
        rotated = LocalBlobStore(served.store.root, MediaKeys.derive(KEYS, "k2"),
                                 base_url=served.store.base_url, clock=served.clock)
        assert (await rotated.get("in/old")).data == PICTURE
        await rotated.put("in/new", b"new", "text/plain")
        assert (await rotated.get("in/new")).data == b"new"
        query = URL(old_url).query
        assert rotated.verify("in/old", query["e"], query["k"], query["s"]) is not None

    async def test_a_key_no_longer_configured_is_named(self, served: Served) -> None:
        await served.store.put("in/old", PICTURE, "image/jpeg")
        only_k2 = LocalBlobStore(served.store.root, MediaKeys.derive({"k2": KEYS["k2"]}, "k2"),
                                 base_url="http://x")
        with pytest.raises(BlobStoreError, match="'k1', not configured"):
            await only_k2.get("in/old")

    async def test_retention_follows_the_stores_clock(self, served: Served) -> None:
        await served.store.put("in/old", b"old", "text/plain")
        served.clock.advance(timedelta(days=31))
        await served.store.put("in/new", b"new", "text/plain")
        assert await sweep(served.store, max_age=timedelta(days=30), clock=served.clock) == 1
        assert (await served.store.get("in/new")).data == b"new"
        assert await served.store.older_than(served.clock.now() + timedelta(days=1)) == [
            "in/new"]


class TestSignedUrls:
    async def test_a_fresh_url_serves_the_media_with_safe_headers(self, served: Served) -> None:
        key = new_blob_key()
        await served.store.put(key, PICTURE, "image/svg+xml")
        status, body, headers = await served.get(await served.store.url(
            key, ttl=timedelta(minutes=5)))
        assert (status, body) == (200, PICTURE)
        assert headers["Content-Type"] == "image/svg+xml"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in headers["Content-Security-Policy"]
        assert headers["Cache-Control"] == "private, max-age=300"

    async def test_an_expired_url_is_refused(self, served: Served) -> None:
        key = new_blob_key()
        await served.store.put(key, PICTURE, "image/jpeg")
        url = await served.store.url(key, ttl=timedelta(minutes=5))
        served.clock.advance(timedelta(minutes=5))
        status, body, _ = await served.get(url)
        assert status == 403 and PICTURE not in body

    @pytest.mark.parametrize("change", ["signature", "expiry", "key", "key_id", "missing",
                                        "unicode_signature", "unicode_expiry"])
    async def test_a_url_changed_in_any_part_is_refused(self, served: Served,
                                                        change: str) -> None:
        key = new_blob_key()
        await served.store.put(key, PICTURE, "image/jpeg")
        await served.store.put("in/other", PICTURE, "image/jpeg")
        url = URL(await served.store.url(key, ttl=timedelta(minutes=5)))
        query = dict(url.query)
        if change == "signature":
            query["s"] = query["s"][:-2] + ("AA" if query["s"][-2:] != "AA" else "BB")
        elif change == "expiry":
            query["e"] = str(int(query["e"]) + 3600)
        elif change == "key_id":
            query["k"] = "k2"
        elif change == "missing":
            del query["s"]
        elif change == "unicode_signature":
            query["s"] = "é" * len(query["s"])
        elif change == "unicode_expiry":
            query["e"] = "²" * 10
        path = url.path if change != "key" else "/media/in/other"
        status, body, _ = await served.get(str(url.with_path(path).with_query(query)))
        assert status == 403 and PICTURE not in body

    async def test_a_valid_url_for_deleted_media_is_not_found(self, served: Served) -> None:
        key = new_blob_key()
        await served.store.put(key, PICTURE, "image/jpeg")
        url = await served.store.url(key, ttl=timedelta(minutes=5))
        await served.store.delete(key)
        status, _, _ = await served.get(url)
        assert status == 404

    async def test_a_gateway_without_a_local_store_serves_nothing(self) -> None:
        app = web.Application()
        add_media_routes(app)
        async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http, \
                http.get(server.make_url("/media/m/abc?e=1&k=k1&s=x")) as response:
            assert response.status == 404
