"""Participants: wallets (chat) must be on XMTP and join the group; phones (non-chat) need
one of our proxy numbers, an address other than it, and a pair free elsewhere."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.api_app import (
    AUTH,
    BACKENDS,
    GATEWAY_WALLET,
    OTHER_PROXY,
    PHONE,
    PHONE_2,
    PROXY,
    UNREACHABLE_WALLET,
    WALLET,
    WALLET_2,
    api_client,
)

CHECKSUMMED = "0xAb5801a7D398351b8bE11C439e05C5B3259aeC9B"


@pytest.fixture(params=BACKENDS)
async def api(aiohttp_client, tmp_path, request):  # type: ignore[no-untyped-def]
    client, parts = await api_client(aiohttp_client, tmp_path, request.param)
    resp = await client.post("/v1/conversations", json={"unique_name": "c1"}, headers=AUTH)
    return client, parts, await resp.json()


async def add(client, ref: str, expect: int = 201, **body: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    resp = await client.post(f"/v1/conversations/{ref}/participants", json=body, headers=AUTH)
    data = await resp.json()
    assert resp.status == expect, data
    return data  # type: ignore[no-any-return]


class TestAddingAWallet:
    async def test_a_wallet_on_xmtp_joins_and_is_added_to_the_group(self, api):
        client, parts, conv = api
        participant = await add(client, "c1", identity=WALLET)
        assert participant["identity"] == CHECKSUMMED
        assert participant["channel"] == "xmtp" and participant["consent"] == "allowed"
        assert parts.chat.groups[conv["xmtp_group_id"]].members == {CHECKSUMMED}

    async def test_a_wallet_not_on_xmtp_is_refused(self, api):
        client, parts, conv = api
        refused = await add(client, "c1", 422, identity=UNREACHABLE_WALLET)
        assert refused["code"] == "wallet_not_on_xmtp"
        assert parts.chat.groups[conv["xmtp_group_id"]].members == set()

    @pytest.mark.parametrize("form", [GATEWAY_WALLET, GATEWAY_WALLET.lower()])
    async def test_the_gateway_s_own_wallet_is_refused(self, api, form):
        client, parts, conv = api
        parts.chat.reachable.add(GATEWAY_WALLET)  # it is on XMTP: that is not the reason
        refused = await add(client, "c1", 422, identity=form)
        assert refused["code"] == "identity_is_gateway"
        assert parts.chat.groups[conv["xmtp_group_id"]].members == set()

    async def test_the_same_wallet_twice_is_refused(self, api):
        client, _, _ = api
        await add(client, "c1", identity=WALLET)
        assert (await add(client, "c1", 409, identity=CHECKSUMMED))["code"] == \
            "participant_exists"

    @pytest.mark.parametrize("identity", [
        "0x12", "alice", "0xAb5801a7D398351b8bE11C439e05C5B3259aeC9b"])  # last: bad checksum
    async def test_something_that_is_not_a_wallet_address_is_refused(self, api, identity):
        client, _, _ = api
        assert (await add(client, "c1", 400, identity=identity))["code"] == "invalid_identity"


class TestAddingAPhone:
    async def test_a_phone_joins_with_our_proxy_number(self, api):
        client, _, _ = api
        participant = await add(client, "c1", address=PHONE, proxy_address=PROXY,
                                channel="whatsapp", attributes={"name": "Ann"})
        assert participant["address"] == PHONE and participant["proxy_address"] == PROXY
        assert participant["channel"] == "whatsapp" and participant["identity"] is None
        assert participant["attributes"] == {"name": "Ann"}

    async def test_a_proxy_that_is_not_ours_is_refused(self, api):
        client, _, _ = api
        refused = await add(client, "c1", 422, address=PHONE, proxy_address=PHONE_2)
        assert refused["code"] == "proxy_address_not_ours"

    async def test_a_channel_no_rule_serves_on_that_proxy_is_refused(self, api):
        client, _, _ = api
        # OTHER_PROXY's rule serves sms only
        refused = await add(client, "c1", 422, address=PHONE, proxy_address=OTHER_PROXY,
                            channel="whatsapp")
        assert refused["code"] == "proxy_address_not_ours"
        assert "whatsapp" in refused["error"] and "sms" in refused["error"]
        await add(client, "c1", address=PHONE, proxy_address=OTHER_PROXY, channel="sms")

    async def test_one_of_our_own_numbers_as_the_phone_is_refused(self, api):
        client, parts, conv = api
        refused = await add(client, "c1", 422, address=OTHER_PROXY, proxy_address=PROXY)
        assert refused["code"] == "address_equals_proxy"
        async with parts.store.transaction() as tx:
            assert await tx.list_participants(conv["id"]) == []

    async def test_address_and_proxy_must_differ(self, api):
        client, _, _ = api
        refused = await add(client, "c1", 422, address=PROXY, proxy_address=PROXY)
        assert refused["code"] == "address_equals_proxy"

    async def test_a_pair_already_in_another_active_conversation_is_refused(self, api):
        client, _, _ = api
        await add(client, "c1", address=PHONE, proxy_address=PROXY)
        await client.post("/v1/conversations", json={"unique_name": "c2"}, headers=AUTH)
        refused = await add(client, "c2", 409, address=PHONE, proxy_address=PROXY)
        assert refused["code"] == "participant_pair_in_use"
        # the same phone on another of our numbers is another pair
        await add(client, "c2", address=PHONE, proxy_address=OTHER_PROXY)

    async def test_closing_a_conversation_frees_its_pairs(self, api):
        client, _, _ = api
        await add(client, "c1", address=PHONE, proxy_address=PROXY)
        await client.patch("/v1/conversations/c1", json={"state": "closed"}, headers=AUTH)
        await client.post("/v1/conversations", json={"unique_name": "c2"}, headers=AUTH)
        await add(client, "c2", address=PHONE, proxy_address=PROXY)

    @pytest.mark.parametrize("body,code", [
        ({"address": "12345", "proxy_address": PROXY}, "invalid_address"),
        ({"address": PHONE, "proxy_address": "nope"}, "invalid_address"),
        ({"address": PHONE}, "invalid_body"),
        ({"address": PHONE, "proxy_address": PROXY, "channel": "xmtp"}, "invalid_body"),
        ({"address": PHONE, "proxy_address": PROXY, "identity": WALLET}, "invalid_body"),
        ({}, "invalid_body"),
    ])
    async def test_malformed_requests_are_refused(self, api, body, code):
        client, _, _ = api
        assert (await add(client, "c1", 400, **body))["code"] == code


class TestListingAndRemovingParticipants:
    async def test_list_fetch_and_remove_a_wallet_which_leaves_the_group(self, api):
        client, parts, conv = api
        wallet = await add(client, "c1", identity=WALLET)
        phone = await add(client, "c1", address=PHONE, proxy_address=PROXY)
        await add(client, "c1", identity=WALLET_2)
        resp = await client.get("/v1/conversations/c1/participants", headers=AUTH)
        listed = (await resp.json())["data"]
        assert {p["id"] for p in listed} >= {wallet["id"], phone["id"]} and len(listed) == 3
        resp = await client.get(f"/v1/conversations/c1/participants/{wallet['id']}",
                                headers=AUTH)
        assert (await resp.json()) == wallet
        resp = await client.delete(f"/v1/conversations/c1/participants/{wallet['id']}",
                                   headers=AUTH)
        assert resp.status == 204
        assert CHECKSUMMED not in parts.chat.groups[conv["xmtp_group_id"]].members
        assert (conv["xmtp_group_id"], CHECKSUMMED) in parts.chat.removed
        resp = await client.get("/v1/conversations/c1/participants", headers=AUTH)
        assert wallet["id"] not in {p["id"] for p in (await resp.json())["data"]}
        resp = await client.get("/v1/conversations/c1/participants",
                                params={"include_left": "true"}, headers=AUTH)
        left = next(p for p in (await resp.json())["data"] if p["id"] == wallet["id"])
        assert left["left_at"] is not None
        # a wallet that left may join again
        await add(client, "c1", identity=WALLET)

    async def test_unknown_participants_and_participants_of_other_conversations_are_404(
            self, api):
        client, _, _ = api
        await client.post("/v1/conversations", json={"unique_name": "c2"}, headers=AUTH)
        other = await add(client, "c2", address=PHONE, proxy_address=PROXY)
        for pid in ("MB" + "0" * 32, other["id"]):
            resp = await client.get(f"/v1/conversations/c1/participants/{pid}", headers=AUTH)
            assert resp.status == 404
            assert (await resp.json())["code"] == "participant_not_found"
            resp = await client.delete(f"/v1/conversations/c1/participants/{pid}",
                                       headers=AUTH)
            assert resp.status == 404

    async def test_participants_of_an_unknown_conversation_are_404(self, api):
        client, _, _ = api
        resp = await client.get("/v1/conversations/nope/participants", headers=AUTH)
        assert resp.status == 404
        assert (await resp.json())["code"] == "conversation_not_found"
