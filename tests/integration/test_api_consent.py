"""The XMTP seed's consent filter: conversations listed, and events streamed, by the
consent of their active participants (``allowed``, ``unknown``, ``denied``), through
the API and the Python client."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.client import GatewayClient
from gateway.domain.ids import ParticipantId
from gateway.domain.models import Consent
from tests.fixtures.api_app import (
    AUTH,
    BACKENDS,
    OTHER_PROXY,
    PHONE,
    PHONE_2,
    PROXY,
    TOKEN,
    WALLET,
    api_client,
)


@pytest.fixture(params=BACKENDS)
async def api(aiohttp_client, tmp_path, request):  # type: ignore[no-untyped-def]
    return await api_client(aiohttp_client, tmp_path, request.param, poll_interval=0.1)


@pytest.fixture
async def gw(api):  # type: ignore[no-untyped-def]
    """The Python client on the same app."""
    client, _ = api
    async with GatewayClient(str(client.make_url("")), TOKEN) as found:
        yield found


async def post(client, path: str, **body: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    resp = await client.post(path, json=body, headers=AUTH)
    data = await resp.json()
    assert resp.status == 201, data
    return data  # type: ignore[no-any-return]


async def deny(parts, participant: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    """What the relay does when the phone texts STOP."""
    async with parts.store.transaction() as tx:
        await tx.set_participant_consent(ParticipantId(participant["id"]), Consent.DENIED)


async def conversations(client, parts) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """One conversation per case, by unique name -> id:
    allowed: a wallet; unknown: a phone that never said; denied: a phone that said
    STOP (and a wallet); left: a phone that said STOP, then left; empty: nobody."""
    ids = {}
    for name in ("allowed", "unknown", "denied", "left", "empty"):
        ids[name] = (await post(client, "/v1/conversations", unique_name=name))["id"]
    await post(client, "/v1/conversations/allowed/participants", identity=WALLET)
    await post(client, "/v1/conversations/unknown/participants",
               address=PHONE, proxy_address=PROXY)
    await deny(parts, await post(client, "/v1/conversations/denied/participants",
                                 address=PHONE_2, proxy_address=PROXY))
    await post(client, "/v1/conversations/denied/participants", identity=WALLET)
    left = await post(client, "/v1/conversations/left/participants",
                      address=PHONE, proxy_address=OTHER_PROXY)
    await deny(parts, left)
    resp = await client.delete(f"/v1/conversations/left/participants/{left['id']}",
                               headers=AUTH)
    assert resp.status == 204
    return ids


async def names(client, **params: str) -> list[str]:  # type: ignore[no-untyped-def]
    found: list[str] = []
    while True:
        resp = await client.get("/v1/conversations", params=params, headers=AUTH)
        page = await resp.json()
        assert resp.status == 200, page
        found += [c["unique_name"] for c in page["data"]]
        if not page["next_page_token"]:
            return found
        params = {"page_token": page["next_page_token"], "page_size": params["page_size"]}


class TestListingConversationsByConsent:
    @pytest.mark.parametrize(("consent", "expected"), [
        ("allowed", ["allowed", "denied"]),
        ("unknown", ["unknown"]),
        ("denied", ["denied"]),
        ("unknown,denied", ["unknown", "denied"]),
        ("allowed,unknown,denied", ["allowed", "unknown", "denied"]),
    ])
    async def test_conversations_with_an_active_participant_of_that_consent(
            self, api, consent, expected):
        client, parts = api
        await conversations(client, parts)
        assert await names(client, consent=consent, page_size="1") == expected

    async def test_without_the_filter_every_conversation_is_listed(self, api):
        client, parts = api
        await conversations(client, parts)
        assert await names(client, page_size="2") == [
            "allowed", "unknown", "denied", "left", "empty"]

    async def test_it_combines_with_state(self, api):
        client, parts = api
        await conversations(client, parts)
        await client.patch("/v1/conversations/denied", json={"state": "inactive"},
                           headers=AUTH)
        assert await names(client, consent="allowed", state="active",
                           page_size="1") == ["allowed"]

    @pytest.mark.parametrize("raw", ["yes", "", "allowed,", "Allowed", " allowed"])
    async def test_an_unknown_consent_is_refused(self, api, raw):
        client, _ = api
        for path in ("/v1/conversations", "/v1/events"):
            resp = await client.get(path, params={"consent": raw}, headers=AUTH)
            assert resp.status == 400 and (await resp.json())["code"] == "invalid_parameter"

    async def test_through_the_python_client(self, api, gw):
        client, parts = api
        await conversations(client, parts)
        denied = await gw.conversations.list(consent="denied").all()
        either = await gw.conversations.list(consent=["unknown", "denied"], page_size=1).all()
        assert [c.unique_name for c in denied] == ["denied"]
        assert [c.unique_name for c in either] == ["unknown", "denied"]


async def take_until(stream, done) -> list[Any]:  # type: ignore[no-untyped-def]
    """Values off ``stream`` up to and including the first for which ``done`` is true."""
    async def _take() -> list[Any]:
        found = []
        async for value in stream:
            found.append(value)
            if done(value):
                break
        return found
    return await asyncio.wait_for(_take(), 10)


class TestStreamingEventsByConsent:
    async def test_only_events_of_conversations_with_that_consent_are_sent(self, api, gw):
        client, parts = api
        ids = await conversations(client, parts)
        marker = await post(client, "/v1/conversations/denied/messages", body="end")
        async with gw.stream(consent="denied", after=0) as stream:
            seen = await take_until(
                stream, lambda e: e.data.get("message_id") == marker["id"])
        assert {e.conversation_id for e in seen} == {ids["denied"]}
        assert [e.type for e in seen] == ["conversation.added", "participant.added",
                                          "participant.added", "message.added"]

    async def test_consent_is_judged_when_the_event_is_sent(self, api, gw):
        client, parts = api
        ids = await conversations(client, parts)
        await post(client, "/v1/conversations/allowed/messages", body="not this")
        await post(client, "/v1/conversations/unknown/messages", body="this")
        phone = (await (await client.get("/v1/conversations/unknown/participants",
                                         headers=AUTH)).json())["data"][0]
        await deny(parts, phone)  # the unknown phone says STOP: its history now counts
        async with gw.stream_messages(consent="denied", after=0) as stream:
            messages = await take_until(stream, lambda m: m.body == "this")
        assert [(m.conversation_id, m.body) for m in messages] == [(ids["unknown"], "this")]

    async def test_a_live_stream_skips_conversations_without_that_consent(self, api, gw):
        client, parts = api
        await conversations(client, parts)
        async with gw.stream(consent="allowed", types=("conversation.updated",)) as updates:
            await asyncio.wait_for(updates.connected.wait(), 5)
            for name in ("unknown", "left", "empty", "allowed"):
                await client.patch(f"/v1/conversations/{name}", headers=AUTH,
                                   json={"friendly_name": f"{name} renamed"})
            updated = await take_until(updates, lambda e: True)
        assert [e.data["conversation"]["friendly_name"] for e in updated] == [
            "allowed renamed"]
