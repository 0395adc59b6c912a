"""Post-event webhooks: each event reaches each URL once it succeeds, signed, retried with
backoff on failure, resumed from a stored cursor, and never in the way of the API."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from gateway.api.settings import WebhookSettings
from gateway.api.webhooks import SIGNATURE_HEADER, verify
from tests.fixtures.api_app import AUTH, api_client, build_app, open_parts

SECRET = "webhook-secret-dddddddddddd"


class Receiver:
    """Records what it is sent; fails the first ``failures`` posts with a 500."""

    def __init__(self, failures: int = 0, status: int = 500) -> None:
        self.failures = failures
        self.status = status
        self.posts: list[tuple[dict[str, Any], bytes, str]] = []
        self.attempts = 0
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.read()
        if self.failures > 0:
            self.failures -= 1
            return web.Response(status=self.status)
        self.posts.append((json.loads(body), body, request.headers.get(SIGNATURE_HEADER, "")))
        self.arrived.set()
        return web.Response(status=204)

    async def wait_for(self, count: int, within: float = 10) -> None:
        async def _wait() -> None:
            while len(self.posts) < count:
                self.arrived.clear()
                await self.arrived.wait()
        await asyncio.wait_for(_wait(), within)


async def receiver_url(aiohttp_server, receiver: Receiver) -> str:  # type: ignore[no-untyped-def]
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app)
    return str(server.make_url("/hook"))


def settings(*urls: str) -> WebhookSettings:
    return WebhookSettings(urls=urls, secret=SECRET, attempts=4, base_delay=0.05,
                           max_delay=0.2, timeout=2)


class TestWebhooks:
    async def test_events_are_posted_in_order_and_signed(
            self, aiohttp_server, aiohttp_client, tmp_path):
        receiver = Receiver()
        url = await receiver_url(aiohttp_server, receiver)
        client, _ = await api_client(aiohttp_client, tmp_path, webhooks=settings(url),
                                     poll_interval=0.1)
        await asyncio.sleep(0.3)  # the sender starts at the log's end
        await client.post("/v1/conversations", json={"unique_name": "c"}, headers=AUTH)
        await client.post("/v1/conversations/c/messages", json={"body": "hi"}, headers=AUTH)
        await receiver.wait_for(2)
        events = [p[0] for p in receiver.posts]
        assert [e["type"] for e in events] == ["conversation.added", "message.added"]
        assert events[1]["data"]["message"]["body"] == "hi"
        for _, body, signature in receiver.posts:
            assert verify(SECRET, signature, body, now=time.time())
            assert not verify("another-secret", signature, body, now=time.time())
            assert not verify(SECRET, signature, body + b" ", now=time.time())
            assert not verify(SECRET, signature, body, now=time.time() + 3600)

    async def test_a_failing_receiver_is_retried_until_it_accepts(
            self, aiohttp_server, aiohttp_client, tmp_path):
        receiver = Receiver(failures=2)
        url = await receiver_url(aiohttp_server, receiver)
        client, _ = await api_client(aiohttp_client, tmp_path, webhooks=settings(url),
                                     poll_interval=0.1)
        await asyncio.sleep(0.3)
        started = asyncio.get_running_loop().time()
        resp = await client.post("/v1/conversations", json={}, headers=AUTH)
        # the API answered without waiting for the receiver
        assert resp.status == 201 and asyncio.get_running_loop().time() - started < 0.5
        await receiver.wait_for(1)
        assert receiver.attempts == 3 and len(receiver.posts) == 1

    async def test_a_dead_receiver_does_not_hold_up_another(
            self, aiohttp_server, aiohttp_client, tmp_path):
        dead = Receiver(failures=1000)
        alive = Receiver()
        urls = [await receiver_url(aiohttp_server, r) for r in (dead, alive)]
        client, _ = await api_client(aiohttp_client, tmp_path, webhooks=settings(*urls),
                                     poll_interval=0.1)
        await asyncio.sleep(0.3)
        for _ in range(3):
            await client.post("/v1/conversations", json={}, headers=AUTH)
        await alive.wait_for(3)
        assert dead.posts == []

    async def test_a_receiver_refusal_for_good_is_not_retried(
            self, aiohttp_server, aiohttp_client, tmp_path):
        receiver = Receiver(failures=1, status=410)
        url = await receiver_url(aiohttp_server, receiver)
        client, _ = await api_client(aiohttp_client, tmp_path, webhooks=settings(url),
                                     poll_interval=0.1)
        await asyncio.sleep(0.3)
        await client.post("/v1/conversations", json={}, headers=AUTH)
        await client.post("/v1/conversations", json={}, headers=AUTH)
        await receiver.wait_for(1)
        assert receiver.attempts == 2  # the refused event once, the next one once

    async def test_a_restarted_gateway_resumes_after_the_last_event_sent(
            self, aiohttp_server, aiohttp_client, tmp_path):
        receiver = Receiver()
        url = await receiver_url(aiohttp_server, receiver)
        parts = await open_parts(tmp_path)
        try:
            first = await aiohttp_client(build_app(parts, webhooks=settings(url),
                                                   poll_interval=0.1))
            await asyncio.sleep(0.3)
            await first.post("/v1/conversations", json={"unique_name": "a"}, headers=AUTH)
            await receiver.wait_for(1)
            await first.close()
            async with parts.store.transaction() as tx:  # written while no sender ran
                await tx.add_event("conversation.added", conversation_id=None,
                                   data={"conversation": {"unique_name": "while-down"}},
                                   now=parts.clock.now())
            second = await aiohttp_client(build_app(parts, webhooks=settings(url),
                                                    poll_interval=0.1))
            await second.post("/v1/conversations", json={"unique_name": "b"}, headers=AUTH)
            await receiver.wait_for(3)
            await asyncio.sleep(0.3)
            await second.close()
        finally:
            await parts.store.close()
        # at least once: a post cut short by the shutdown may come again, with its id
        by_id = {p[0]["id"]: p[0]["data"]["conversation"]["unique_name"]
                 for p in receiver.posts}
        assert [by_id[i] for i in sorted(by_id)] == ["a", "while-down", "b"]
