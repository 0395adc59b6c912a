"""The conversations resource: create, fetch by id or unique name, update, states, delete,
list with cursor pagination."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.fixtures.api_app import AUTH, BACKENDS, PHONE, PROXY, WALLET, api_client


@pytest.fixture(params=BACKENDS)
async def api(aiohttp_client, tmp_path, request):  # type: ignore[no-untyped-def]
    return await api_client(aiohttp_client, tmp_path, request.param)


async def create(client, expect: int = 201, **body: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    resp = await client.post("/v1/conversations", json=body, headers=AUTH)
    data = await resp.json()
    assert resp.status == expect, data
    return data  # type: ignore[no-any-return]


class TestCreatingAConversation:
    async def test_it_is_created_with_its_names_attributes_and_an_xmtp_group(self, api):
        client, parts = api
        created = await create(client, friendly_name="Support", unique_name="support-1",
                               attributes={"team": "a"})
        assert created["id"].startswith("CH")
        assert created["state"] == "active"
        assert created["attributes"] == {"team": "a"}
        assert created["xmtp_group_id"] in parts.chat.groups
        assert parts.chat.groups[created["xmtp_group_id"]].name == "Support"

    async def test_an_empty_body_creates_an_unnamed_conversation(self, api):
        client, _ = api
        created = await create(client)
        assert created["friendly_name"] is None and created["unique_name"] is None

    async def test_a_taken_unique_name_is_refused(self, api):
        client, parts = api
        await create(client, unique_name="dup")
        refused = await create(client, 409, unique_name="dup")
        assert refused["code"] == "unique_name_taken"
        assert len(parts.chat.groups) == 1  # checked before a group was made

    async def test_unknown_fields_and_bad_types_are_refused(self, api):
        client, _ = api
        assert (await create(client, 400, colour="red"))["code"] == "invalid_body"
        assert (await create(client, 400, attributes=[1]))["code"] == "invalid_body"
        assert (await create(client, 400, friendly_name=""))["code"] == "invalid_body"
        resp = await client.post("/v1/conversations", data=b"{not json", headers=AUTH)
        assert resp.status == 400 and (await resp.json())["code"] == "invalid_body"

    async def test_a_chat_network_failure_is_a_502_and_records_nothing(self, api):
        client, parts = api
        parts.chat.failing = True
        assert (await create(client, 502))["code"] == "chat_network_error"
        resp = await client.get("/v1/conversations", headers=AUTH)
        assert (await resp.json())["data"] == []


class TestFetchingAConversation:
    async def test_by_id_and_by_unique_name(self, api):
        client, _ = api
        created = await create(client, unique_name="by-name")
        for ref in (created["id"], "by-name"):
            resp = await client.get(f"/v1/conversations/{ref}", headers=AUTH)
            assert resp.status == 200
            assert (await resp.json())["id"] == created["id"]

    async def test_an_unknown_one_is_404(self, api):
        client, _ = api
        resp = await client.get("/v1/conversations/CH" + "0" * 32, headers=AUTH)
        assert resp.status == 404
        assert await resp.json() == {"error": "no conversation 'CH" + "0" * 32 + "'",
                                     "code": "conversation_not_found"}


class TestUpdatingAConversation:
    async def test_names_and_attributes_change_and_others_stay(self, api):
        client, _ = api
        created = await create(client, friendly_name="a", unique_name="u1",
                               attributes={"x": 1})
        resp = await client.patch(f"/v1/conversations/{created['id']}",
                                  json={"friendly_name": "b"}, headers=AUTH)
        updated = await resp.json()
        assert resp.status == 200, updated
        assert updated["friendly_name"] == "b"
        assert updated["unique_name"] == "u1" and updated["attributes"] == {"x": 1}
        resp = await client.patch("/v1/conversations/u1",
                                  json={"unique_name": None, "attributes": {"y": 2}},
                                  headers=AUTH)
        updated = await resp.json()
        assert updated["unique_name"] is None and updated["attributes"] == {"y": 2}

    async def test_renaming_onto_a_taken_unique_name_is_refused(self, api):
        client, _ = api
        await create(client, unique_name="taken")
        other = await create(client, unique_name="mine")
        resp = await client.patch(f"/v1/conversations/{other['id']}",
                                  json={"unique_name": "taken"}, headers=AUTH)
        assert resp.status == 409 and (await resp.json())["code"] == "unique_name_taken"

    async def test_state_goes_active_inactive_closed_and_closed_is_final(self, api):
        client, _ = api
        cid = (await create(client))["id"]
        for state in ("inactive", "active", "inactive", "closed"):
            resp = await client.patch(f"/v1/conversations/{cid}", json={"state": state},
                                      headers=AUTH)
            assert resp.status == 200 and (await resp.json())["state"] == state
        resp = await client.patch(f"/v1/conversations/{cid}", json={"state": "active"},
                                  headers=AUTH)
        assert resp.status == 409
        assert (await resp.json())["code"] == "invalid_state_transition"

    async def test_a_closed_conversation_refuses_messages_and_participants(self, api):
        client, _ = api
        cid = (await create(client))["id"]
        await client.patch(f"/v1/conversations/{cid}", json={"state": "closed"}, headers=AUTH)
        resp = await client.post(f"/v1/conversations/{cid}/messages", json={"body": "hi"},
                                 headers=AUTH)
        assert resp.status == 409 and (await resp.json())["code"] == "conversation_closed"
        resp = await client.post(f"/v1/conversations/{cid}/participants",
                                 json={"identity": WALLET}, headers=AUTH)
        assert resp.status == 409 and (await resp.json())["code"] == "conversation_closed"

    async def test_an_empty_update_and_an_unknown_state_are_refused(self, api):
        client, _ = api
        cid = (await create(client))["id"]
        resp = await client.patch(f"/v1/conversations/{cid}", json={}, headers=AUTH)
        assert resp.status == 400
        resp = await client.patch(f"/v1/conversations/{cid}", json={"state": "paused"},
                                  headers=AUTH)
        assert resp.status == 400 and (await resp.json())["code"] == "invalid_parameter"


class TestDeletingAConversation:
    async def test_it_is_gone_with_its_participants_and_messages_and_wallets_leave(self, api):
        client, parts = api
        created = await create(client, unique_name="gone")
        cid = created["id"]
        await client.post(f"/v1/conversations/{cid}/participants", json={"identity": WALLET},
                          headers=AUTH)
        await client.post(f"/v1/conversations/{cid}/participants",
                          json={"address": PHONE, "proxy_address": PROXY}, headers=AUTH)
        await client.post(f"/v1/conversations/{cid}/messages", json={"body": "x"},
                          headers=AUTH)
        resp = await client.delete(f"/v1/conversations/{cid}", headers=AUTH)
        assert resp.status == 204
        assert (await client.get(f"/v1/conversations/{cid}", headers=AUTH)).status == 404
        assert parts.chat.groups[created["xmtp_group_id"]].members == set()
        # the phone's pair is free again, and the unique name too
        other = await create(client, unique_name="gone")
        resp = await client.post(f"/v1/conversations/{other['id']}/participants",
                                 json={"address": PHONE, "proxy_address": PROXY},
                                 headers=AUTH)
        assert resp.status == 201

    async def test_deleting_an_unknown_conversation_is_404(self, api):
        client, _ = api
        resp = await client.delete("/v1/conversations/nope", headers=AUTH)
        assert resp.status == 404


async def list_all(client, **query: Any) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Follows next_page_token to the end."""
    found: list[dict[str, Any]] = []
    params = {k: str(v) for k, v in query.items()}
    while True:
        resp = await client.get("/v1/conversations", params=params, headers=AUTH)
        page = await resp.json()
        assert resp.status == 200, page
        found += page["data"]
        if not page["has_next"]:
            assert page["next_page_token"] is None
            return found
        params = {"page_token": page["next_page_token"], "page_size": params["page_size"]}


class TestListingConversations:
    async def test_an_empty_list_has_no_pages_either_way(self, api):
        client, _ = api
        resp = await client.get("/v1/conversations", headers=AUTH)
        assert await resp.json() == {"data": [], "has_next": False, "has_prev": False,
                                     "next_page_token": None, "prev_page_token": None}

    async def test_an_exact_page_says_there_is_no_next(self, api):
        client, _ = api
        for _ in range(3):
            await create(client)
        resp = await client.get("/v1/conversations", params={"page_size": "3"}, headers=AUTH)
        page = await resp.json()
        assert len(page["data"]) == 3
        assert page["has_next"] is False and page["has_prev"] is False

    async def test_pages_cover_everything_once_in_creation_order(self, api):
        client, _ = api
        ids = [(await create(client))["id"] for _ in range(7)]
        assert [c["id"] for c in await list_all(client, page_size=3)] == ids

    async def test_the_last_page_is_short_and_can_step_back(self, api):
        client, _ = api
        ids = [(await create(client))["id"] for _ in range(5)]
        first = await (await client.get("/v1/conversations", params={"page_size": "3"},
                                         headers=AUTH)).json()
        last = await (await client.get("/v1/conversations", params={
            "page_token": first["next_page_token"], "page_size": "3"}, headers=AUTH)).json()
        assert [c["id"] for c in last["data"]] == ids[3:]
        assert last["has_next"] is False and last["has_prev"] is True
        back = await (await client.get("/v1/conversations", params={
            "page_token": last["prev_page_token"], "page_size": "3"}, headers=AUTH)).json()
        assert [c["id"] for c in back["data"]] == ids[:3]
        assert back["has_prev"] is False and back["has_next"] is True

    async def test_rows_inserted_while_paging_neither_repeat_nor_shift_pages(self, api):
        client, _ = api
        ids = [(await create(client))["id"] for _ in range(4)]
        first = await (await client.get("/v1/conversations", params={"page_size": "2"},
                                         headers=AUTH)).json()
        added = await asyncio.gather(*(create(client) for _ in range(3)))
        rest = []
        token = first["next_page_token"]
        while token:
            page = await (await client.get("/v1/conversations", params={
                "page_token": token, "page_size": "2"}, headers=AUTH)).json()
            rest += [c["id"] for c in page["data"]]
            token = page["next_page_token"]
        seen = [c["id"] for c in first["data"]] + rest
        assert len(seen) == len(set(seen)) == 7
        assert seen[:4] == ids and set(seen[4:]) == {a["id"] for a in added}

    async def test_filtering_by_state_carries_into_the_next_page(self, api):
        client, _ = api
        ids = [(await create(client))["id"] for _ in range(5)]
        for cid in ids[1::2]:
            await client.patch(f"/v1/conversations/{cid}", json={"state": "inactive"},
                               headers=AUTH)
        inactive = await list_all(client, page_size=1, state="inactive")
        assert [c["id"] for c in inactive] == ids[1::2]
        active = await list_all(client, page_size=2, state="active")
        assert [c["id"] for c in active] == ids[0::2]

    @pytest.mark.parametrize("query", [{"page_size": "0"}, {"page_size": "101"},
                                       {"page_size": "x"}, {"state": "gone"}])
    async def test_bad_parameters_are_refused(self, api, query):
        client, _ = api
        resp = await client.get("/v1/conversations", params=query, headers=AUTH)
        assert resp.status == 400 and (await resp.json())["code"] == "invalid_parameter"

    @pytest.mark.parametrize("token", ["garbage!", "e30", "eyJmIjp0cnVlLCJrIjo1fQ"])
    async def test_a_forged_page_token_is_refused(self, api, token):
        client, _ = api
        resp = await client.get("/v1/conversations", params={"page_token": token},
                                headers=AUTH)
        assert resp.status == 400 and (await resp.json())["code"] == "invalid_page_token"


async def post_raw(client, raw: str, path: str = "/v1/conversations"):  # type: ignore[no-untyped-def]
    """Posts JSON text as written, escapes and all (aiohttp's json= would re-encode it)."""
    return await client.post(path, data=raw.encode(),
                             headers={**AUTH, "Content-Type": "application/json"})


async def patch(client, ref: str, **body: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    resp = await client.patch(f"/v1/conversations/{ref}", json=body, headers=AUTH)
    data = await resp.json()
    assert resp.status == 200, data
    return data  # type: ignore[no-any-return]


async def get_list(client) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return await (await client.get("/v1/conversations", headers=AUTH)).json()  # type: ignore[no-any-return]


class TestStrictJsonBodies:
    @pytest.mark.parametrize(("raw", "field"), [
        ('{"friendly_name": "\\ud800"}', "friendly_name"),
        ('{"unique_name": "a\\udc00b"}', "unique_name"),
        ('{"attributes": {"tags": ["fine", "x\\udfffy"]}}', "attributes.tags[1]"),
        ('{"attributes": {"k\\ud800": 1}}', "attributes"),
    ])
    async def test_a_lone_surrogate_is_refused_naming_its_field(self, api, raw, field):
        client, parts = api
        resp = await post_raw(client, raw)
        refused = await resp.json()
        assert resp.status == 400, refused
        assert refused["code"] == "invalid_body"
        assert refused["error"].startswith(f"{field} ")
        assert parts.chat.groups == {}  # refused before anything was made

    @pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
    async def test_numbers_json_does_not_have_are_refused(self, api, number):
        client, _ = api
        resp = await post_raw(client, f'{{"attributes": {{"n": {number}}}}}')
        assert resp.status == 400
        assert (await resp.json())["code"] == "invalid_body"
        assert (await get_list(client))["data"] == []

    async def test_an_integer_past_python_s_digit_limit_is_refused(self, api):
        client, _ = api
        resp = await post_raw(client, '{"attributes": {"n": 1' + "0" * 5000 + "}}")
        assert resp.status == 400
        assert (await resp.json())["code"] == "invalid_body"

    async def test_large_finite_numbers_are_kept_and_echoed_as_valid_json(self, api):
        client, _ = api
        resp = await post_raw(client, '{"attributes": {"n": 1e300, "m": -2.5e-300}}')
        assert resp.status == 201
        created = json.loads(await resp.text())  # strict: would fail on NaN/Infinity
        # PostgreSQL's jsonb keeps numbers as numeric: 1e300 may come back as an integer
        assert {k: float(v) for k, v in created["attributes"].items()} == {
            "n": 1e300, "m": -2.5e-300}


class TestUniqueNamesShapedLikeIds:
    @pytest.mark.parametrize("name", ["CH" + "0" * 32, "CH" + "ab" * 16, "ch" + "AB" * 16])
    async def test_an_id_shaped_unique_name_is_refused_on_create_and_update(self, api, name):
        client, _ = api
        refused = await create(client, 400, unique_name=name)
        assert refused["code"] == "invalid_body" and "conversation id" in refused["error"]
        await create(client, unique_name="plain")
        resp = await client.patch("/v1/conversations/plain", json={"unique_name": name},
                                  headers=AUTH)
        assert resp.status == 400 and "conversation id" in (await resp.json())["error"]

    async def test_an_id_of_another_conversation_cannot_be_taken_as_a_name(self, api):
        client, _ = api
        first = await create(client)
        await create(client, 400, unique_name=first["id"])
        fetched = await (await client.get(f"/v1/conversations/{first['id']}",
                                          headers=AUTH)).json()
        assert fetched["id"] == first["id"]

    @pytest.mark.parametrize("name", ["CH-support", "CH" + "0" * 31, "CH" + "0" * 33,
                                      "CH" + "g" * 32])
    async def test_names_that_merely_resemble_ids_are_accepted(self, api, name):
        client, _ = api
        created = await create(client, unique_name=name)
        resp = await client.get(f"/v1/conversations/{name}", headers=AUTH)
        assert (await resp.json())["id"] == created["id"]


async def logged_events(parts) -> list[Any]:  # type: ignore[no-untyped-def]
    async with parts.store.transaction() as tx:
        return await tx.list_events(after=0, limit=1000)


class TestUpdatesThatChangeNothing:
    async def test_closing_a_closed_conversation_is_200_and_announces_nothing(self, api):
        client, parts = api
        conv = await create(client, unique_name="c")
        closed = await patch(client, "c", state="closed")
        before = await logged_events(parts)
        again = await patch(client, "c", state="closed")
        assert again == closed  # updated_at included: nothing was written
        assert await logged_events(parts) == before
        assert again["id"] == conv["id"]

    async def test_only_fields_whose_value_changes_are_listed_as_changed(self, api):
        client, parts = api
        await create(client, unique_name="c", friendly_name="A", attributes={"x": 1})
        await patch(client, "c", friendly_name="A", unique_name="c", attributes={"x": 2},
                    state="active")
        last = (await logged_events(parts))[-1]
        assert last.type == "conversation.updated"
        assert last.data["changed"] == ["attributes"]

    async def test_renaming_to_the_same_names_writes_no_event(self, api):
        client, parts = api
        await create(client, unique_name="c", friendly_name="A", attributes={"x": [1]})
        before = await logged_events(parts)
        await patch(client, "c", friendly_name="A", unique_name="c", attributes={"x": [1]})
        assert await logged_events(parts) == before


class TestRenamingAConversationRenamesItsGroup:
    async def test_a_new_friendly_name_is_the_group_s_new_name(self, api):
        client, parts = api
        created = await create(client, friendly_name="Support", unique_name="s1")
        resp = await client.patch("/v1/conversations/s1", json={"friendly_name": "Support One"},
                                  headers=AUTH)
        assert resp.status == 200 and (await resp.json())["friendly_name"] == "Support One"
        assert parts.chat.groups[created["xmtp_group_id"]].name == "Support One"

    async def test_a_cleared_friendly_name_names_the_group_as_creation_would(self, api):
        client, parts = api
        named = await create(client, friendly_name="Support", unique_name="s1")
        unnamed = await create(client, friendly_name="Sales")
        for conversation, ref, expected in ((named, "s1", "s1"),
                                            (unnamed, unnamed["id"], "Conversation")):
            resp = await client.patch(f"/v1/conversations/{ref}",
                                      json={"friendly_name": None}, headers=AUTH)
            assert resp.status == 200
            assert parts.chat.groups[conversation["xmtp_group_id"]].name == expected

    async def test_other_changes_leave_the_group_s_name_alone(self, api):
        client, parts = api
        created = await create(client, friendly_name="Support", unique_name="s1")
        group = parts.chat.groups[created["xmtp_group_id"]]
        group.name = "SMS · +1 415-555-0123"  # as the relay names the groups it makes
        for change in ({"unique_name": "s2"}, {"attributes": {"x": 1}},
                       {"friendly_name": "Support"}, {"state": "inactive"}):
            resp = await client.patch(f"/v1/conversations/{created['id']}", json=change,
                                      headers=AUTH)
            assert resp.status == 200, await resp.json()
        assert group.name == "SMS · +1 415-555-0123"

    async def test_a_failed_rename_is_a_502_and_records_nothing(self, api):
        client, parts = api
        created = await create(client, friendly_name="Support", unique_name="s1")
        parts.chat.failing = True
        resp = await client.patch("/v1/conversations/s1", json={"friendly_name": "Support One"},
                                  headers=AUTH)
        assert resp.status == 502 and (await resp.json())["code"] == "chat_network_error"
        parts.chat.failing = False
        fetched = await (await client.get("/v1/conversations/s1", headers=AUTH)).json()
        assert fetched["friendly_name"] == "Support"
        assert fetched["updated_at"] == created["updated_at"]
        assert parts.chat.groups[created["xmtp_group_id"]].name == "Support"

    async def test_a_refused_update_leaves_the_group_s_name_alone(self, api):
        client, parts = api
        await create(client, unique_name="taken")
        created = await create(client, friendly_name="Support", unique_name="s1")
        await client.patch("/v1/conversations/s1", json={"state": "closed"}, headers=AUTH)
        for change, code in (
                ({"friendly_name": "Support One", "unique_name": "taken"}, "unique_name_taken"),
                ({"friendly_name": "Support One", "state": "active"},
                 "invalid_state_transition")):
            resp = await client.patch("/v1/conversations/s1", json=change, headers=AUTH)
            assert resp.status == 409 and (await resp.json())["code"] == code
        assert parts.chat.groups[created["xmtp_group_id"]].name == "Support"
