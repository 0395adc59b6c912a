"""Messages: sent through the same outbox as bridged ones; listed per conversation by
index (order, anchor, since/until, cursor pages) and across conversations by time."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from gateway.domain.ids import MessageId
from gateway.domain.models import Channel, DeliveryState
from tests.fixtures.api_app import AUTH, BACKENDS, PHONE, PROXY, WALLET, api_client


@pytest.fixture(params=BACKENDS)
async def api(aiohttp_client, tmp_path, request):  # type: ignore[no-untyped-def]
    client, parts = await api_client(aiohttp_client, tmp_path, request.param)
    await client.post("/v1/conversations", json={"unique_name": "c1"}, headers=AUTH)
    return client, parts


async def send(client, ref: str = "c1", expect: int = 201, **body: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    resp = await client.post(f"/v1/conversations/{ref}/messages", json=body, headers=AUTH)
    data = await resp.json()
    assert resp.status == expect, data
    return data  # type: ignore[no-any-return]


async def get(client, path: str, **params: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    resp = await client.get(path, params={k: str(v) for k, v in params.items()}, headers=AUTH)
    data = await resp.json()
    assert resp.status == 200, data
    return data  # type: ignore[no-any-return]


async def members(client) -> tuple[dict[str, Any], dict[str, Any]]:  # type: ignore[no-untyped-def]
    wallet = await (await client.post("/v1/conversations/c1/participants",
                                      json={"identity": WALLET}, headers=AUTH)).json()
    phone = await (await client.post("/v1/conversations/c1/participants",
                                     json={"address": PHONE, "proxy_address": PROXY},
                                     headers=AUTH)).json()
    return wallet, phone


class TestSendingAMessage:
    async def test_it_is_recorded_and_queued_for_every_other_participant_on_its_channel(
            self, api):
        client, parts = api
        wallet, phone = await members(client)
        sent = await send(client, author=wallet["identity"], body="hello",
                          media_url=["https://example.com/a.png"], attributes={"k": 1})
        assert sent["index"] == 0 and sent["source"] == "api"
        assert sent["author"] == wallet["id"] and sent["body"] == "hello"
        assert sent["media"] == [{"url": "https://example.com/a.png", "content_type": None,
                              "filename": None, "size": None}]
        async with parts.store.transaction() as tx:
            deliveries = await tx.list_deliveries(MessageId(sent["id"]))
        assert [(d.participant_id, d.channel, d.state) for d in deliveries] == [
            (phone["id"], Channel.SMS, DeliveryState.PENDING)]

    async def test_without_an_author_it_goes_to_wallets_and_phones_alike(self, api):
        client, _ = api
        wallet, phone = await members(client)
        sent = await send(client, body="from the operator")
        assert sent["author"] is None
        fetched = await get(client, f"/v1/conversations/c1/messages/{sent['id']}")
        assert {r["participant_id"]: r["channel"] for r in fetched["receipts"]} == {
            wallet["id"]: "xmtp", phone["id"]: "sms"}
        assert all(r["state"] == "pending" for r in fetched["receipts"])

    async def test_the_author_may_be_named_by_id_or_address(self, api):
        client, _ = api
        _, phone = await members(client)
        assert (await send(client, author=phone["id"], body="a"))["author"] == phone["id"]
        assert (await send(client, author=PHONE, body="b"))["author"] == phone["id"]

    async def test_an_author_who_is_not_a_participant_is_refused(self, api):
        client, _ = api
        refused = await send(client, expect=422, author="+14155550177", body="x")
        assert refused["code"] == "author_not_participant"

    @pytest.mark.parametrize("body,code", [
        ({}, "empty_message"), ({"body": "  "}, "empty_message"),
        ({"body": 5}, "invalid_body"), ({"body": "x", "media_url": ["ftp://x"]}, "invalid_body"),
        ({"body": "x", "to": "y"}, "invalid_body"),
    ])
    async def test_malformed_messages_are_refused(self, api, body, code):
        client, _ = api
        assert (await send(client, expect=400, **body))["code"] == code

    @pytest.mark.parametrize(("raw", "field"), [
        ('{"body": "x\\udc00y"}', "body"),
        ('{"body": "x", "attributes": {"a": ["\\ud83d"]}}', "attributes.a[0]"),
        ('{"author": "\\ud800", "body": "x"}', "author"),
    ])
    async def test_a_lone_surrogate_is_refused_naming_its_field(self, api, raw, field):
        client, _ = api
        resp = await client.post("/v1/conversations/c1/messages", data=raw.encode(),
                                 headers={**AUTH, "Content-Type": "application/json"})
        refused = await resp.json()
        assert resp.status == 400, refused
        assert refused["code"] == "invalid_body" and refused["error"].startswith(f"{field} ")
        assert (await get(client, "/v1/conversations/c1/messages"))["data"] == []

    async def test_indexes_stay_gap_free_under_concurrent_sends(self, api):
        client, _ = api
        sent = await asyncio.gather(*(send(client, body=str(i)) for i in range(20)))
        assert sorted(m["index"] for m in sent) == list(range(20))

    async def test_a_message_of_another_conversation_is_not_found_here(self, api):
        client, _ = api
        await client.post("/v1/conversations", json={"unique_name": "c2"}, headers=AUTH)
        other = await send(client, "c2", body="elsewhere")
        resp = await client.get(f"/v1/conversations/c1/messages/{other['id']}", headers=AUTH)
        assert resp.status == 404 and (await resp.json())["code"] == "message_not_found"


async def collect(client, path: str, **params: Any) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    found: list[dict[str, Any]] = []
    page = await get(client, path, **params)
    while True:
        found += page["data"]
        if not page["has_next"]:
            return found
        page = await get(client, path, page_token=page["next_page_token"],
                         **({"page_size": params["page_size"]} if "page_size" in params
                            else {}))


class TestListingAConversationsMessages:
    async def test_empty(self, api):
        client, _ = api
        page = await get(client, "/v1/conversations/c1/messages")
        assert page["data"] == [] and not page["has_next"] and not page["has_prev"]

    async def test_pages_ascending_and_descending_cover_every_index_once(self, api):
        client, _ = api
        for i in range(7):
            await send(client, body=f"m{i}")
        up = await collect(client, "/v1/conversations/c1/messages", page_size=3)
        assert [m["index"] for m in up] == list(range(7))
        assert [m["body"] for m in up] == [f"m{i}" for i in range(7)]
        down = await collect(client, "/v1/conversations/c1/messages", page_size=3,
                             order="desc")
        assert [m["index"] for m in down] == list(range(6, -1, -1))

    async def test_an_anchor_starts_at_that_index_and_can_page_back(self, api):
        client, _ = api
        for i in range(10):
            await send(client, body=f"m{i}")
        page = await get(client, "/v1/conversations/c1/messages", anchor=4, page_size=3)
        assert [m["index"] for m in page["data"]] == [4, 5, 6]
        assert page["has_prev"] and page["has_next"]
        back = await get(client, "/v1/conversations/c1/messages",
                         page_token=page["prev_page_token"], page_size=3)
        assert [m["index"] for m in back["data"]] == [1, 2, 3]
        down = await get(client, "/v1/conversations/c1/messages", anchor=4, order="desc",
                         page_size=3)
        assert [m["index"] for m in down["data"]] == [4, 3, 2]

    async def test_an_anchor_past_the_end_gives_an_empty_page_that_can_step_back(self, api):
        client, _ = api
        for i in range(3):
            await send(client, body=f"m{i}")
        page = await get(client, "/v1/conversations/c1/messages", anchor=9)
        assert page["data"] == [] and page["has_prev"] and not page["has_next"]
        back = await get(client, "/v1/conversations/c1/messages",
                         page_token=page["prev_page_token"])
        assert [m["index"] for m in back["data"]] == [0, 1, 2]

    async def test_the_last_page_when_messages_arrive_meanwhile(self, api):
        client, _ = api
        for i in range(4):
            await send(client, body=f"m{i}")
        first = await get(client, "/v1/conversations/c1/messages", page_size=4)
        assert not first["has_next"] and first["next_page_token"] is None
        # a newest-first reader keeps its place while new messages come in
        newest = await get(client, "/v1/conversations/c1/messages", page_size=2, order="desc")
        await send(client, body="late")
        older = await get(client, "/v1/conversations/c1/messages",
                          page_token=newest["next_page_token"], page_size=2)
        assert [m["index"] for m in older["data"]] == [1, 0]

    async def test_since_and_until_select_by_time_and_travel_in_tokens(self, api):
        client, parts = api
        stamps = []
        for i in range(6):
            stamps.append((await send(client, body=f"m{i}"))["created_at"])
            parts.clock.advance(timedelta(minutes=1))  # type: ignore[attr-defined]
        found = await collect(client, "/v1/conversations/c1/messages", page_size=1,
                              since=stamps[1], until=stamps[4])
        assert [m["index"] for m in found] == [1, 2, 3]

    async def test_unix_seconds_are_accepted_for_since(self, api):
        client, parts = api
        await send(client, body="old")
        parts.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
        cutoff = parts.clock.now().timestamp()
        await send(client, body="new")
        page = await get(client, "/v1/conversations/c1/messages", since=cutoff)
        assert [m["body"] for m in page["data"]] == ["new"]

    @pytest.mark.parametrize("query", [{"order": "up"}, {"anchor": "-1"}, {"since": "soon"},
                                       {"anchor": str(2**63)},
                                       {"since": "2026-02-01T00:00:00+00:00",
                                        "until": "2026-01-01T00:00:00+00:00"}])
    async def test_bad_parameters_are_refused(self, api, query):
        client, _ = api
        resp = await client.get("/v1/conversations/c1/messages", params=query, headers=AUTH)
        assert resp.status == 400 and (await resp.json())["code"] == "invalid_parameter"

    async def test_a_token_from_the_conversation_listing_is_refused_here(self, api):
        client, _ = api
        await client.post("/v1/conversations", json={}, headers=AUTH)
        page = await get(client, "/v1/conversations", page_size=1)
        resp = await client.get("/v1/conversations/c1/messages",
                                params={"page_token": page["next_page_token"]}, headers=AUTH)
        assert resp.status == 400 and (await resp.json())["code"] == "invalid_page_token"


class TestListingMessagesAcrossConversations:
    async def test_all_conversations_oldest_first_limited_and_paged(self, api):
        client, _ = api
        await client.post("/v1/conversations", json={"unique_name": "c2"}, headers=AUTH)
        bodies = []
        for i in range(5):
            ref = "c1" if i % 2 == 0 else "c2"
            bodies.append((await send(client, ref, body=f"m{i}"))["body"])
        page = await get(client, "/v1/messages", limit=2)
        assert [m["body"] for m in page["data"]] == bodies[:2] and page["has_next"]
        everything = await collect(client, "/v1/messages", limit=2)
        assert [m["body"] for m in everything] == bodies
        assert {m["conversation_id"] for m in everything} == {
            c["id"] for c in (await get(client, "/v1/conversations"))["data"]}

    async def test_page_size_names_the_page_size_as_on_every_other_listing(self, api):
        client, _ = api
        for i in range(3):
            await send(client, body=f"m{i}")
        page = await get(client, "/v1/messages", page_size=2)
        assert [m["body"] for m in page["data"]] == ["m0", "m1"] and page["has_next"]
        rest = await get(client, "/v1/messages", page_token=page["next_page_token"],
                         page_size=2)
        assert [m["body"] for m in rest["data"]] == ["m2"]

    @pytest.mark.parametrize("query", [{"page_size": "0"}, {"page_size": "101"},
                                       {"page_size": "2", "limit": "2"}])
    async def test_bad_page_sizes_are_refused(self, api, query):
        client, _ = api
        resp = await client.get("/v1/messages", params=query, headers=AUTH)
        assert resp.status == 400 and (await resp.json())["code"] == "invalid_parameter"

    async def test_since_and_until(self, api):
        client, parts = api
        stamps = []
        for i in range(4):
            stamps.append((await send(client, body=f"m{i}"))["created_at"])
            parts.clock.advance(timedelta(minutes=1))  # type: ignore[attr-defined]
        page = await get(client, "/v1/messages", since=stamps[1], until=stamps[3])
        assert [m["body"] for m in page["data"]] == ["m1", "m2"]


class TestLimitIsThePageSizeOnEveryListing:
    """SignalWire's ``getConversationMessages(limit)``: ``limit`` is honoured as
    ``page_size`` (never silently ignored), and giving both is refused."""

    @pytest.mark.parametrize("path", ["/v1/conversations/c1/messages", "/v1/messages"])
    async def test_limit_sizes_the_page_and_the_pages_after_it(self, api, path):
        client, _ = api
        for i in range(5):
            await send(client, body=f"m{i}")
        page = await get(client, path, limit=2)
        assert [m["body"] for m in page["data"]] == ["m0", "m1"] and page["has_next"]
        rest = await get(client, path, limit=2, page_token=page["next_page_token"])
        assert [m["body"] for m in rest["data"]] == ["m2", "m3"]

    async def test_limit_sizes_a_page_of_conversations(self, api):
        client, _ = api
        for _ in range(2):
            await client.post("/v1/conversations", json={}, headers=AUTH)
        page = await get(client, "/v1/conversations", limit=2)
        assert len(page["data"]) == 2 and page["has_next"]

    @pytest.mark.parametrize("path", ["/v1/conversations", "/v1/conversations/c1/messages",
                                      "/v1/messages"])
    @pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "101"}, {"limit": "x"},
                                       {"page_size": "2", "limit": "2"}])
    async def test_bad_limits_and_both_names_are_refused(self, api, path, query):
        client, _ = api
        resp = await client.get(path, params=query, headers=AUTH)
        body = await resp.json()
        assert resp.status == 400 and body["code"] == "invalid_parameter", body
