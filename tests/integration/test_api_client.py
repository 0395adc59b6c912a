"""The Python client against a running gateway API: resources, paginators, errors, and
event streams that survive the gateway restarting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.client import ApiResponseError, GatewayClient, Message, StreamFailed
from gateway.domain.ids import ConversationId
from tests.fixtures.api_app import (
    PHONE,
    PROXY,
    TOKEN,
    WALLET,
    ApiParts,
    build_app,
    open_parts,
)
from tests.ports import free_port

CHECKSUMMED = "0xAb5801a7D398351b8bE11C439e05C5B3259aeC9B"


class Gateway:
    """The API app on a fixed port that can be stopped and started again, over the
    same database, as a restarted gateway process would be."""

    def __init__(self, parts: ApiParts, port: int) -> None:
        self.parts = parts
        self.port = port
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.runner = web.AppRunner(build_app(self.parts, poll_interval=0.1),
                                    shutdown_timeout=2)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()
        self.runner = None


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    parts = await open_parts(tmp_path)
    gw = Gateway(parts, free_port())
    await gw.start()
    yield gw
    if gw.runner is not None:
        await gw.stop()
    await parts.store.close()


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[GatewayClient]:
    async with GatewayClient(gateway.url, TOKEN) as c:
        yield c


class TestConversationsThroughTheClient:
    async def test_create_get_update_and_list_with_the_paginator(self, client):
        created = [await client.conversations.create(friendly_name=f"c{i}",
                                                     unique_name=f"u{i}") for i in range(5)]
        fetched = await client.conversations.get("u3")
        assert fetched.id == created[3].id and fetched.friendly_name == "c3"
        listed = await client.conversations.list(page_size=2).all()
        assert [c.id for c in listed] == [c.id for c in created]
        closed = await created[0].close()
        assert closed.state == "closed"
        assert [c.id for c in await client.conversations.list(state="closed").all()] == [
            created[0].id]
        limited = [c async for c in client.conversations.list(page_size=2, limit=3)]
        assert len(limited) == 3

    async def test_pages_step_forward_and_back(self, client):
        for _ in range(3):
            await client.conversations.create()
        page = await client.conversations.list(page_size=2).first_page()
        assert page.has_next and not page.has_prev
        second = await page.next_page()
        assert second is not None and len(second.items) == 1 and not second.has_next
        back = await second.prev_page()
        assert back is not None and [c.id for c in back.items] == [c.id for c in page.items]

    async def test_refusals_raise_with_the_api_code(self, client):
        await client.conversations.create(unique_name="dup")
        with pytest.raises(ApiResponseError) as refused:
            await client.conversations.create(unique_name="dup")
        assert refused.value.status == 409 and refused.value.code == "unique_name_taken"
        with pytest.raises(ApiResponseError) as missing:
            await client.conversations.get("nope")
        assert missing.value.code == "conversation_not_found"


class TestParticipantsAndMessagesThroughTheClient:
    async def test_participants_join_and_leave(self, client, gateway):
        conversation = await client.conversations.create(friendly_name="f")
        wallet = await conversation.add_participant(WALLET)
        phone = await conversation.add_non_chat_participant(PROXY, PHONE)
        assert wallet.is_chat and wallet.identity == CHECKSUMMED
        assert not phone.is_chat and phone.address == PHONE
        assert {p.id for p in await conversation.participants()} == {wallet.id, phone.id}
        await conversation.leave(WALLET)
        assert [p.id for p in await conversation.participants()] == [phone.id]
        group = gateway.parts.chat.groups[conversation.xmtp_group_id]
        assert CHECKSUMMED not in group.members

    async def test_send_then_read_history_both_ways_and_receipts(self, client):
        conversation = await client.conversations.create()
        phone = await conversation.add_participant(address=PHONE, proxy_address=PROXY)
        sent = [await conversation.send(f"m{i}") for i in range(5)]
        forwards = [m.body async for m in conversation.messages(page_size=2)]
        assert forwards == [f"m{i}" for i in range(5)]
        latest = [m.index async for m in conversation.messages(direction="backwards",
                                                                 limit=3)]
        assert latest == [4, 3, 2]
        one = await conversation.message(sent[0].id)
        assert one.receipts is not None
        assert [(r.participant_id, r.state) for r in one.receipts] == [(phone.id, "pending")]

    async def test_messages_across_conversations_since_until_and_limit(self, client, gateway):
        a = await client.conversations.create()
        b = await client.conversations.create()
        clock = gateway.parts.clock
        stamps = []
        for i in range(6):
            stamps.append(clock.now())
            await (a if i % 2 else b).send(f"m{i}")
            clock.advance(timedelta(minutes=1))  # type: ignore[attr-defined]
        found = [m.body async for m in client.messages(since=stamps[1], until=stamps[5],
                                                        page_size=2)]
        assert found == ["m1", "m2", "m3", "m4"]
        assert len([m async for m in client.messages(limit=4, page_size=3)]) == 4
        unix = [m.body async for m in client.messages(since=stamps[4].timestamp())]
        assert unix == ["m4", "m5"]


async def next_values(stream, count: int, within: float = 10.0) -> list[Any]:  # type: ignore[no-untyped-def]
    async def _take() -> list[Any]:
        found = []
        async for value in stream:
            found.append(value)
            if len(found) == count:
                return found
        return found
    return await asyncio.wait_for(_take(), within)


class TestStreams:
    async def test_stream_messages_yields_and_calls_back(self, client):
        conversation = await client.conversations.create()
        seen: list[Message] = []
        stream = client.stream_messages(on_value=seen.append).start()
        await asyncio.wait_for(stream.connected.wait(), 5)
        await conversation.send("one")
        await conversation.add_participant(WALLET)  # not a message: filtered out
        await conversation.send("two")
        values = await next_values(stream, 2)
        await stream.close()
        assert [m.body for m in values] == ["one", "two"]
        assert [m.body for m in seen] == ["one", "two"]

    async def test_every_event_with_a_conversation_filter(self, client):
        mine = await client.conversations.create()
        other = await client.conversations.create()
        async with client.stream(conversation_id=mine.id) as stream:
            await asyncio.wait_for(stream.connected.wait(), 5)
            await other.send("elsewhere")
            await mine.send("here")
            await mine.update(friendly_name="renamed")
            events = await next_values(stream, 2)
        assert [e.type for e in events] == ["message.added", "conversation.updated"]

    async def test_the_stream_survives_a_gateway_restart_without_gaps_or_repeats(
            self, client, gateway):
        conversation = await client.conversations.create()
        restarts: list[None] = []
        retries: list[tuple[int, int]] = []
        errors: list[BaseException] = []
        stream = client.stream_messages(
            retry_delay=0.2, retry_attempts=50, on_restart=lambda: restarts.append(None),
            on_retry=lambda a, n: retries.append((a, n)), on_error=errors.append).start()
        await asyncio.wait_for(stream.connected.wait(), 5)
        await conversation.send("before")
        assert [m.body for m in await next_values(stream, 1)] == ["before"]

        await gateway.stop()
        # written while the API is down (the relay of another process keeps recording)
        async with gateway.parts.store.transaction() as tx:
            from gateway.domain.models import MessageSource
            from gateway.domain.ports import NewMessage
            now = datetime.now(UTC)
            message = await tx.add_message(NewMessage(
                conversation_id=ConversationId(conversation.id), author=None,
                body="while down", source=MessageSource.SMS, external_id="SM-down"), now=now)
            await tx.add_event("message.added", conversation_id=message.conversation_id,
                               data={"message_id": message.id, "index": message.index},
                               now=now)
        await asyncio.sleep(0.5)
        await gateway.start()

        await conversation.send("after")
        values = await next_values(stream, 2, within=15)
        await stream.close()
        assert [m.body for m in values] == ["while down", "after"]
        assert restarts == [None] and retries and retries[0] == (1, 50)
        assert errors

    async def test_a_refused_stream_fails_at_once_without_retrying(self, gateway):
        failed: list[None] = []
        retried: list[Any] = []
        async with GatewayClient(gateway.url, "wrong-token-cccccccccccc") as bad:
            stream = bad.stream(on_fail=lambda: failed.append(None),
                                on_retry=lambda *a: retried.append(a))
            with pytest.raises(StreamFailed):
                await next_values(stream, 1)
            await stream.close()
        assert failed == [None] and retried == []

    async def test_retries_run_out_then_the_stream_fails(self, tmp_path):
        failed: list[None] = []
        retried: list[tuple[int, int]] = []
        async with GatewayClient(f"http://127.0.0.1:{free_port()}", TOKEN) as nowhere:
            stream = nowhere.stream(retry_attempts=2, retry_delay=0.05,
                                    on_fail=lambda: failed.append(None),
                                    on_retry=lambda a, n: retried.append((a, n)))
            with pytest.raises(StreamFailed):
                await next_values(stream, 1)
            await stream.close()
        assert retried == [(1, 2), (2, 2)] and failed == [None]

    async def test_no_retry_when_retry_on_fail_is_off(self, tmp_path):
        retried: list[Any] = []
        async with GatewayClient(f"http://127.0.0.1:{free_port()}", TOKEN) as nowhere:
            stream = nowhere.stream(retry_on_fail=False, on_retry=lambda *a: retried.append(a))
            with pytest.raises(StreamFailed):
                await next_values(stream, 1)
        assert retried == []


class TestMoreStreams:
    async def test_new_conversations_stream_as_objects(self, client):
        stream = client.conversations.stream().start()
        await asyncio.wait_for(stream.connected.wait(), 5)
        created = await client.conversations.create(unique_name="streamed")
        (seen,) = await next_values(stream, 1)
        await stream.close()
        assert seen.id == created.id and seen.unique_name == "streamed"
        assert (await seen.refresh()).id == created.id  # usable like any Conversation

    async def test_one_conversation_s_messages_with_an_async_callback(self, client):
        mine = await client.conversations.create()
        other = await client.conversations.create()
        seen: list[str | None] = []

        async def on_value(message: Message) -> None:
            seen.append(message.body)

        stream = mine.stream_messages(on_value=on_value).start()
        await asyncio.wait_for(stream.connected.wait(), 5)
        await other.send("not mine")
        await mine.send("mine")
        (message,) = await next_values(stream, 1)
        await stream.close()
        assert message.body == "mine" and seen == ["mine"]

    async def test_starting_after_an_event_id_replays_from_there(self, client):
        conversation = await client.conversations.create()
        for body in ("a", "b", "c"):
            await conversation.send(body)
        async with client.stream_messages(after=0) as stream:
            replayed = await next_values(stream, 3)
        assert [m.body for m in replayed] == ["a", "b", "c"]
        async with client.stream_messages(after=stream.last_event_id) as later:
            await asyncio.wait_for(later.connected.wait(), 5)
            await conversation.send("d")
            assert [m.body for m in await next_values(later, 1)] == ["d"]


class FlakyQueries:
    """The real queries, but the event log read fails once when told to (a database
    restart, a network blip to PostgreSQL)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.fail_next = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def list_events(self, **kwargs: Any) -> Any:
        if self.fail_next:
            self.fail_next = False
            from gateway.errors import StoreError
            raise StoreError("database went away (test)")
        return await self.real.list_events(**kwargs)


class TestStoreHiccups:
    async def test_a_failed_log_read_ends_the_stream_and_the_client_resumes(self, tmp_path):
        from gateway.api.keys import API_QUERIES
        from gateway.store.queries import queries_for

        parts = await open_parts(tmp_path)
        flaky = FlakyQueries(queries_for(parts.store))
        app = build_app(parts)
        app[API_QUERIES] = flaky  # type: ignore[assignment]
        port = free_port()
        runner = web.AppRunner(app, shutdown_timeout=2)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        restarts: list[None] = []
        try:
            async with GatewayClient(f"http://127.0.0.1:{port}", TOKEN) as client:
                conversation = await client.conversations.create()
                stream = client.stream_messages(retry_delay=0.1,
                                                on_restart=lambda: restarts.append(None))
                async with stream:
                    await asyncio.wait_for(stream.connected.wait(), 5)
                    await conversation.send("a")
                    assert [m.body for m in await next_values(stream, 1)] == ["a"]
                    flaky.fail_next = True
                    await conversation.send("b")
                    await conversation.send("c")
                    values = await next_values(stream, 2)
            assert [m.body for m in values] == ["b", "c"] and restarts == [None]
        finally:
            await runner.cleanup()
            await flaky.real.close()
            await parts.store.close()
