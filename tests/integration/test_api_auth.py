"""Bearer authentication and the JSON error shape of everything under /v1."""

from __future__ import annotations

import pytest

from tests.fixtures.api_app import AUTH, TOKEN, api_client

SECOND = "second-token-bbbbbbbbbbbbbbbb"


@pytest.fixture
async def api(aiohttp_client, tmp_path):  # type: ignore[no-untyped-def]
    client, _ = await api_client(aiohttp_client, tmp_path, tokens=(TOKEN, SECOND))
    return client


class TestBearerAuthentication:
    async def test_every_configured_token_is_accepted(self, api):
        for token in (TOKEN, SECOND):
            resp = await api.get("/v1/conversations",
                                 headers={"Authorization": f"Bearer {token}"})
            assert resp.status == 200

    @pytest.mark.parametrize("headers", [{}, {"Authorization": ""},
                                         {"Authorization": f"Basic {TOKEN}"},
                                         {"Authorization": "Bearer "}])
    async def test_a_missing_token_is_401(self, api, headers):
        resp = await api.get("/v1/conversations", headers=headers)
        assert resp.status == 401
        assert (await resp.json())["code"] == "missing_token"
        assert resp.headers["WWW-Authenticate"] == "Bearer"  # RFC 6750, section 3

    @pytest.mark.parametrize("token", [TOKEN + "x", TOKEN[:-1], "wrong", SECOND.upper()])
    async def test_a_wrong_token_is_401(self, api, token):
        resp = await api.get("/v1/events", headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 401
        assert await resp.json() == {"error": "the bearer token is not valid",
                                     "code": "invalid_token"}
        assert resp.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'

    async def test_the_openapi_document_needs_no_token(self, api):
        resp = await api.get("/v1/openapi.json")
        assert resp.status == 200
        assert (await resp.json())["openapi"] == "3.1.0"


class TestApiDisabled:
    async def test_without_configured_tokens_every_call_is_403(self, aiohttp_client, tmp_path):
        client, _ = await api_client(aiohttp_client, tmp_path, tokens=())
        for path in ("/v1/conversations", "/v1/events", "/v1/messages"):
            resp = await client.get(path, headers=AUTH)
            assert resp.status == 403
            assert (await resp.json())["code"] == "api_disabled"


class TestErrorShape:
    async def test_an_unknown_route_under_v1_is_a_json_404(self, api):
        resp = await api.get("/v1/nothing-here", headers=AUTH)
        assert resp.status == 404
        assert (await resp.json())["code"] == "route_not_found"

    async def test_a_wrong_method_is_a_json_405(self, api):
        resp = await api.put("/v1/conversations", headers=AUTH)
        assert resp.status == 405
        assert (await resp.json())["code"] == "method_not_allowed"
        assert "GET" in resp.headers["Allow"]

    async def test_a_body_past_the_server_s_limit_is_a_json_413(self, api):
        attributes = {"blob": "x" * (1024 * 1024 + 1)}  # past the test app's 1 MiB limit
        resp = await api.post("/v1/conversations", json={"attributes": attributes},
                              headers=AUTH)
        assert resp.status == 413
        assert (await resp.json())["code"] == "body_too_large"

    async def test_routes_outside_v1_are_left_alone(self, api):
        resp = await api.get("/elsewhere")
        assert resp.status == 404
        assert resp.content_type == "text/plain"
