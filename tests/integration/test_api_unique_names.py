"""A conversation's unique name is a route's ``{ref}``: whatever characters it holds, the
conversation can be fetched (and its participants and messages reached) by the name
escaped into the path; the two names a URL cannot carry, "." and "..", are refused."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from yarl import URL

from gateway.client import GatewayClient
from tests.fixtures.api_app import AUTH, BACKENDS, api_client

# each is a character aiohttp's default route pattern, or URL syntax, gives a meaning
NAMES = ["{team}", "}", "a/b", "a?b=1", "a#b", "100%", "a%2Fb", " spaced ", "ü-ø", "a\\b"]


def path(name: str, tail: str = "") -> URL:
    return URL(f"/v1/conversations/{quote(name, safe='')}{tail}", encoded=True)


@pytest.fixture(params=BACKENDS)
async def api(aiohttp_client, tmp_path, request):  # type: ignore[no-untyped-def]
    return await api_client(aiohttp_client, tmp_path, request.param)


class TestAnyUniqueNameCanBeFetched:
    @pytest.mark.parametrize("name", NAMES)
    async def test_by_the_escaped_name_on_every_route(self, api, name):
        client, _ = api
        resp = await client.post("/v1/conversations", json={"unique_name": name},
                                 headers=AUTH)
        created = await resp.json()
        assert resp.status == 201, created
        resp = await client.get(path(name), headers=AUTH)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["id"] == created["id"]
        sent = await client.post(path(name, "/messages"), json={"body": "hi"}, headers=AUTH)
        assert sent.status == 201
        listed = await client.get(path(name, "/messages"), headers=AUTH)
        assert [m["body"] for m in (await listed.json())["data"]] == ["hi"]
        participants = await client.get(path(name, "/participants"), headers=AUTH)
        assert participants.status == 200
        patched = await client.patch(path(name), json={"friendly_name": "F"}, headers=AUTH)
        assert (await patched.json())["friendly_name"] == "F"
        assert (await client.delete(path(name), headers=AUTH)).status == 204

    async def test_a_name_renamed_to_braces_is_fetched_by_it(self, api):
        client, _ = api
        created = await (await client.post("/v1/conversations", json={}, headers=AUTH)).json()
        resp = await client.patch(f"/v1/conversations/{created['id']}",
                                  json={"unique_name": "{team}"}, headers=AUTH)
        assert resp.status == 200
        resp = await client.get("/v1/conversations/%7Bteam%7D", headers=AUTH)
        assert resp.status == 200 and (await resp.json())["id"] == created["id"]

    async def test_the_python_client_escapes_the_name(self, api):
        client, _ = api
        async with GatewayClient(str(client.make_url("")), AUTH["Authorization"][7:]) as gw:
            created = await gw.conversations.create(unique_name="{a/b?c#d}")
            fetched = await gw.conversations.get("{a/b?c#d}")
        assert fetched.id == created.id


class TestNamesAUrlCannotCarry:
    @pytest.mark.parametrize("name", [".", ".."])
    async def test_dot_segments_are_refused_on_create_and_update(self, api, name):
        client, _ = api
        resp = await client.post("/v1/conversations", json={"unique_name": name},
                                 headers=AUTH)
        assert resp.status == 400
        assert await resp.json() == {
            "error": "unique_name must not be '.' or '..': a URL cannot name it",
            "code": "invalid_body"}
        created = await (await client.post("/v1/conversations", json={}, headers=AUTH)).json()
        resp = await client.patch(f"/v1/conversations/{created['id']}",
                                  json={"unique_name": name}, headers=AUTH)
        assert resp.status == 400 and (await resp.json())["code"] == "invalid_body"

    @pytest.mark.parametrize("name", ["...", ".a", "a.", " . "])
    async def test_other_names_with_dots_are_kept(self, api, name):
        client, _ = api
        resp = await client.post("/v1/conversations", json={"unique_name": name},
                                 headers=AUTH)
        assert resp.status == 201
        assert (await client.get(path(name), headers=AUTH)).status == 200
