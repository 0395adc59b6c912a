"""Request bodies stay readable by any JSON client: nothing nested deeper than 32 levels
inside a field, and attributes of at most 16 KiB (as Twilio Conversations), each refusal
a 400 naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fixtures.api_app import AUTH, BACKENDS, PHONE, PROXY, api_with_conversation


@pytest.fixture(params=BACKENDS)
async def api(aiohttp_client, tmp_path, request):  # type: ignore[no-untyped-def]
    return await api_with_conversation(aiohttp_client, tmp_path, request.param)


def nested(levels: int) -> dict[str, Any]:
    """An object ``levels`` deep: nested(1) == {"a": 1}."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value  # type: ignore[no-any-return]


def sized(size: int, *, char: str = "x") -> dict[str, Any]:
    """Attributes of exactly ``size`` bytes as compact UTF-8 JSON."""
    frame = len(b'{"s":""}')
    width = len(char.encode())
    assert (size - frame) % width == 0
    found = {"s": char * ((size - frame) // width)}
    assert len(json.dumps(found, ensure_ascii=False, separators=(",", ":")).encode()) == size
    return found


# (method, path, the rest of a valid body): every body that takes attributes
WRITES = [
    ("POST", "/v1/conversations", {}),
    ("PATCH", "/v1/conversations/c1", {}),
    ("POST", "/v1/conversations/c1/participants", {"address": PHONE, "proxy_address": PROXY}),
    ("POST", "/v1/conversations/c1/messages", {"body": "hi"}),
]


async def send(client, method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:  # type: ignore[no-untyped-def]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = await client.request(method, path, data=data,
                                headers={**AUTH, "Content-Type": "application/json"})
    return resp.status, await resp.json()


class TestDeepNesting:
    async def test_five_thousand_levels_in_ten_kib_are_refused_naming_the_field(self, api):
        client, _ = api
        raw = ('{"attributes": ' + '{"a":' * 5000 + "1" + "}" * 5000 + "}").encode()
        assert len(raw) < 64 * 1024
        status, body = await send(client, "POST", "/v1/conversations", raw)
        assert status == 400, body
        assert body["code"] == "invalid_body"
        assert body["error"] == "attributes is nested more than 32 levels deep"
        # nothing was stored, so a client reading the listing back parses it
        resp = await client.get("/v1/conversations", headers=AUTH)
        assert [c["unique_name"] for c in json.loads(await resp.text())["data"]] == ["c1"]

    @pytest.mark.parametrize(("method", "path", "rest"), WRITES)
    async def test_32_levels_are_kept_and_33_refused_on_every_write(
            self, api, method, path, rest):
        client, _ = api
        status, body = await send(client, method, path,
                                  {**rest, "attributes": nested(33)})
        assert status == 400 and body["code"] == "invalid_body", body
        assert "attributes is nested more than 32 levels" in body["error"]
        status, body = await send(client, method, path, {**rest, "attributes": nested(32)})
        assert status in (200, 201), body
        assert body["attributes"] == nested(32)

    async def test_lists_count_as_levels_too(self, api):
        client, _ = api
        deep: Any = 1
        for _ in range(32):  # attributes itself is the 33rd
            deep = [deep]
        status, body = await send(client, "POST", "/v1/conversations",
                                  {"attributes": {"a": deep}})
        assert status == 400 and "attributes is nested" in body["error"]

    async def test_brackets_inside_strings_do_not_count(self, api):
        client, _ = api
        text = '[{"\\"' * 100 + "]}" * 100
        status, body = await send(client, "POST", "/v1/conversations",
                                  {"attributes": {"s": text}, "friendly_name": "{[" * 50})
        assert status == 201, body
        assert body["attributes"] == {"s": text}

    async def test_deep_nesting_in_any_field_names_that_field(self, api):
        client, _ = api
        status, body = await send(client, "POST", "/v1/conversations",
                                  {"friendly_name": nested(40)})
        assert status == 400
        assert body["error"] == "friendly_name is nested more than 32 levels deep"


class TestAttributeSize:
    @pytest.mark.parametrize(("method", "path", "rest"), WRITES)
    async def test_16_kib_are_kept_and_a_byte_more_is_refused(self, api, method, path, rest):
        client, _ = api
        status, body = await send(client, method, path,
                                  {**rest, "attributes": sized(16 * 1024 + 1)})
        assert status == 400 and body["code"] == "invalid_body", body
        assert body["error"] == "attributes is 16385 bytes as JSON; at most 16384 (16 KiB)"
        status, body = await send(client, method, path,
                                  {**rest, "attributes": sized(16 * 1024)})
        assert status in (200, 201), body

    async def test_the_size_is_counted_in_utf8_bytes(self, api):
        client, _ = api
        status, body = await send(client, "POST", "/v1/conversations",
                                  {"attributes": sized(16 * 1024 + 2, char="é")})
        assert status == 400 and body["code"] == "invalid_body"
