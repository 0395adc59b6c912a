"""The event stream: persisted, resumable with Last-Event-ID, filterable, live for many
subscribers at once, and fed by events other processes write."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from gateway.domain.ids import ConversationId
from tests.fixtures.api_app import AUTH, BACKENDS, PHONE, PROXY, WALLET, api_client


@pytest.fixture(params=BACKENDS)
async def api(aiohttp_client, tmp_path, request):  # type: ignore[no-untyped-def]
    return await api_client(aiohttp_client, tmp_path, request.param, poll_interval=0.2)


async def read_events(resp, count: int, within: float = 5.0) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Reads ``count`` events off an open SSE response; checks each frame's id and type
    agree with its JSON."""
    found: list[dict[str, Any]] = []
    fields: dict[str, str] = {}

    async def _read() -> None:
        while len(found) < count:
            line = (await resp.content.readline()).decode()
            assert line, "stream ended"
            line = line.rstrip("\n")
            if not line:
                if "data" in fields:
                    event = json.loads(fields["data"])
                    assert str(event["id"]) == fields["id"]
                    assert event["type"] == fields["event"]
                    found.append(event)
                fields.clear()
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value

    await asyncio.wait_for(_read(), within)
    return found


async def activity(client) -> str:  # type: ignore[no-untyped-def]
    """conversation.added, participant.added twice, message.added; returns the id."""
    conv = await (await client.post("/v1/conversations", json={"unique_name": "c1"},
                                    headers=AUTH)).json()
    await client.post("/v1/conversations/c1/participants", json={"identity": WALLET},
                      headers=AUTH)
    await client.post("/v1/conversations/c1/participants",
                      json={"address": PHONE, "proxy_address": PROXY}, headers=AUTH)
    await client.post("/v1/conversations/c1/messages", json={"body": "secret words"},
                      headers=AUTH)
    return conv["id"]  # type: ignore[no-any-return]


class TestReplayingTheLog:
    async def test_after_zero_replays_every_event_in_order_with_resources(self, api):
        client, _ = api
        cid = await activity(client)
        resp = await client.get("/v1/events", params={"after": "0"}, headers=AUTH)
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = await read_events(resp, 4)
        resp.close()
        assert [e["type"] for e in events] == [
            "conversation.added", "participant.added", "participant.added", "message.added"]
        assert [e["id"] for e in events] == sorted(e["id"] for e in events)
        assert all(e["conversation_id"] == cid for e in events)
        assert events[0]["data"]["conversation"]["unique_name"] == "c1"
        assert events[3]["data"]["message"]["body"] == "secret words"

    async def test_message_bodies_are_not_kept_in_the_log_itself(self, api):
        client, parts = api
        await activity(client)
        async with parts.store.transaction() as tx:
            logged = await tx.list_events(after=0, limit=100)
        assert "secret words" not in json.dumps([dict(e.data) for e in logged])

    async def test_a_dropped_connection_resumes_after_last_event_id_without_gaps_or_repeats(
            self, api):
        client, _ = api
        await activity(client)
        resp = await client.get("/v1/events", params={"after": "0"}, headers=AUTH)
        first = await read_events(resp, 2)
        resp.close()  # dropped mid-stream
        await client.patch("/v1/conversations/c1", json={"friendly_name": "x"}, headers=AUTH)
        resp = await client.get("/v1/events",
                                headers={**AUTH, "Last-Event-ID": str(first[-1]["id"])})
        rest = await read_events(resp, 3)
        resp.close()
        ids = [e["id"] for e in first + rest]
        assert len(set(ids)) == 5 and ids == sorted(ids)
        assert rest[-1]["type"] == "conversation.updated"
        assert rest[-1]["data"]["conversation"]["friendly_name"] == "x"

    async def test_a_bad_last_event_id_is_refused(self, api):
        client, _ = api
        resp = await client.get("/v1/events", headers={**AUTH, "Last-Event-ID": "abc"})
        assert resp.status == 400 and (await resp.json())["code"] == "invalid_parameter"

    @pytest.mark.parametrize("position", [str(2**63), "99999999999999999999999", "-1"])
    async def test_a_position_that_is_no_int64_event_id_is_refused(self, api, position):
        client, _ = api
        for request in ({"headers": {**AUTH, "Last-Event-ID": position}},
                        {"headers": AUTH, "params": {"after": position}}):
            resp = await client.get("/v1/events", **request)
            assert resp.status == 400 and (await resp.json())["code"] == "invalid_parameter"

    async def test_the_largest_int64_is_a_position_the_stream_keeps_working_from(self, api):
        client, _ = api
        resp = await client.get("/v1/events", headers={**AUTH, "Last-Event-ID": str(2**63 - 1)})
        assert resp.status == 200
        first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)
        assert f"id: {2**63 - 1}".encode() in first
        await client.post("/v1/conversations", json={}, headers=AUTH)
        # the new event (id 1) is behind the position: nothing arrives, nor does it crash
        with pytest.raises(TimeoutError):
            await read_events(resp, 1, within=0.5)
        resp.close()


class TestLiveEvents:
    async def test_without_a_position_only_new_events_arrive_and_promptly(self, api):
        client, _ = api
        await activity(client)
        resp = await client.get("/v1/events", headers=AUTH)
        await asyncio.sleep(0.05)
        started = asyncio.get_running_loop().time()
        await client.post("/v1/conversations/c1/messages", json={"body": "new"},
                          headers=AUTH)
        (event,) = await read_events(resp, 1)
        resp.close()
        assert event["data"]["message"]["body"] == "new"
        # woken by the commit, not by the poll
        assert asyncio.get_running_loop().time() - started < 0.5

    async def test_events_written_by_another_process_arrive_through_the_poll(self, api):
        client, parts = api
        cid = await activity(client)
        resp = await client.get("/v1/events", headers=AUTH)
        await asyncio.sleep(0.05)
        # the relay of another gateway process: it writes the log, nobody notifies us
        async with parts.store.transaction() as tx:
            await tx.add_event("delivery.updated", conversation_id=ConversationId(cid),
                               data={"state": "delivered"}, now=datetime.now(UTC))
        (event,) = await read_events(resp, 1, within=3)
        resp.close()
        assert event["type"] == "delivery.updated" and event["data"] == {"state": "delivered"}

    async def test_a_participant_the_relay_removed_arrives_with_its_resource(self, api):
        client, parts = api
        cid = await activity(client)
        resp = await client.get("/v1/events", headers=AUTH)
        await asyncio.sleep(0.05)
        async with parts.store.transaction() as tx:  # as the relay writes it: the id only
            [wallet] = [p for p in await tx.list_participants(ConversationId(cid))
                        if p.identity is not None]
            await tx.remove_participant(wallet.id, now=datetime.now(UTC))
            await tx.add_event("participant.removed", conversation_id=ConversationId(cid),
                               data={"participant_id": wallet.id}, now=datetime.now(UTC))
        (event,) = await read_events(resp, 1, within=3)
        resp.close()
        assert event["type"] == "participant.removed"
        removed = event["data"]["participant"]
        assert removed["id"] == wallet.id and removed["identity"] == wallet.identity
        assert removed["left_at"] is not None

    async def test_a_hundred_subscribers_each_receive_every_event(self, api):
        client, _ = api
        # their own session: the test client's pool stops at 100 connections
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            streams = await asyncio.gather(*(
                session.get(client.make_url("/v1/events"), headers=AUTH)
                for _ in range(100)))
            await asyncio.sleep(0.1)
            await activity(client)
            received = await asyncio.gather(*(read_events(s, 4, within=20)
                                              for s in streams))
            for s in streams:
                s.close()
        assert all([e["type"] for e in r] == [e["type"] for e in received[0]]
                   for r in received)
        assert len({tuple(e["id"] for e in r) for r in received}) == 1


class TestFilteringEvents:
    async def test_by_conversation(self, api):
        client, _ = api
        cid = await activity(client)
        await client.post("/v1/conversations", json={"unique_name": "other"}, headers=AUTH)
        await client.post("/v1/conversations/other/messages", json={"body": "o"},
                          headers=AUTH)
        await client.post("/v1/conversations/c1/messages", json={"body": "mine"},
                          headers=AUTH)
        resp = await client.get("/v1/events", params={"after": "0", "conversation_id": cid},
                                headers=AUTH)
        events = await read_events(resp, 5)
        resp.close()
        assert all(e["conversation_id"] == cid for e in events)
        assert events[-1]["data"]["message"]["body"] == "mine"

    async def test_by_type(self, api):
        client, _ = api
        await activity(client)
        await client.post("/v1/conversations/c1/messages", json={"body": "two"},
                          headers=AUTH)
        resp = await client.get("/v1/events", params={"after": "0", "types": "message.added"},
                                headers=AUTH)
        events = await read_events(resp, 2)
        resp.close()
        assert [e["data"]["message"]["body"] for e in events] == ["secret words", "two"]

    async def test_by_unique_name_as_on_every_other_route(self, api):
        client, _ = api
        cid = await activity(client)
        await client.post("/v1/conversations", json={"unique_name": "other"}, headers=AUTH)
        resp = await client.get("/v1/events", params={"after": "0", "conversation_id": "c1"},
                                headers=AUTH)
        events = await read_events(resp, 4)
        resp.close()
        assert {e["conversation_id"] for e in events} == {cid}

    @pytest.mark.parametrize("ref", ["nope", "CH" + "0" * 32])
    async def test_an_unknown_conversation_is_404(self, api, ref):
        client, _ = api
        resp = await client.get("/v1/events", params={"conversation_id": ref}, headers=AUTH)
        assert resp.status == 404
        assert (await resp.json())["code"] == "conversation_not_found"

    async def test_a_deleted_conversation_s_stream_can_still_be_resumed(self, api):
        client, _ = api
        cid = await activity(client)
        await client.delete(f"/v1/conversations/{cid}", headers=AUTH)
        resp = await client.get("/v1/events", params={"after": "0", "conversation_id": cid},
                                headers=AUTH)
        assert resp.status == 200
        history = await read_events(resp, 5)  # its whole history, the removal last
        resp.close()
        assert [e["type"] for e in history][::4] == ["conversation.added",
                                                      "conversation.removed"]

    async def test_an_unknown_type_is_refused(self, api):
        client, _ = api
        resp = await client.get("/v1/events", params={"types": "message.exploded"},
                                headers=AUTH)
        assert resp.status == 400

    async def test_a_deleted_conversation_s_removal_reaches_its_subscribers(self, api):
        client, _ = api
        cid = await activity(client)
        resp = await client.get("/v1/events", params={"conversation_id": cid}, headers=AUTH)
        await asyncio.sleep(0.05)
        await client.delete(f"/v1/conversations/{cid}", headers=AUTH)
        (removed,) = await read_events(resp, 1)
        resp.close()
        assert removed["type"] == "conversation.removed"
        assert removed["data"]["conversation_id"] == cid
        assert removed["data"]["conversation"]["unique_name"] == "c1"

    async def test_a_deleted_conversation_s_history_replays_whole_with_its_id(self, api):
        client, _ = api
        cid = await activity(client)
        assert (await client.delete("/v1/conversations/c1", headers=AUTH)).status == 204
        expected = ["conversation.added", "participant.added", "participant.added",
                    "message.added", "conversation.removed"]
        for params in ({"after": "0"}, {"after": "0", "conversation_id": cid}):
            resp = await client.get("/v1/events", params=params, headers=AUTH)
            events = await read_events(resp, len(expected))
            resp.close()
            assert [e["type"] for e in events] == expected
            assert [e["conversation_id"] for e in events] == [cid] * len(expected)


class TestKeepAlive:
    async def test_an_idle_stream_sends_keep_alive_comments(self, aiohttp_client, tmp_path):
        client, _ = await api_client(aiohttp_client, tmp_path, heartbeat=0.1)
        resp = await client.get("/v1/events", headers=AUTH)
        lines = []
        async with asyncio.timeout(5):
            while b": keep-alive\n" not in lines:
                lines.append(await resp.content.readline())
        resp.close()
        assert lines[0] == b"retry: 2000\n" and lines[1] == b"id: 0\n"
