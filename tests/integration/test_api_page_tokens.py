"""Page tokens and time filters the store cannot take are refused as the caller's
mistake (400), on every listing and both databases, never a 500 from the driver."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.fixtures.api_app import AUTH, BACKENDS, api_with_conversation

LISTINGS = ["/v1/conversations", "/v1/conversations/c1/messages", "/v1/messages"]

# keys and filters of the right type whose values the database could not hold
BEYOND_INT64 = 99999999999999999999999999999
BEYOND_INT32 = 2**31  # a message index is PostgreSQL's integer
YEAR_0_IN_UTC = "0001-01-01T00:00:00+05:00"
YEAR_10000_IN_UTC = "9999-12-31T23:59:59-05:00"


def token(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.fixture(params=BACKENDS)
async def api(aiohttp_client, tmp_path, request):  # type: ignore[no-untyped-def]
    return await api_with_conversation(aiohttp_client, tmp_path, request.param)


async def refused(client, path: str, params: dict[str, str]) -> str:  # type: ignore[no-untyped-def]
    resp = await client.get(path, params=params, headers=AUTH)
    body = await resp.json()
    assert resp.status == 400, body
    return body["code"]  # type: ignore[no-any-return]


_KEYS = {"k>int64": {"f": True, "k": BEYOND_INT64},
         "k<-int64": {"f": True, "k": -BEYOND_INT64},
         "k>int32": {"f": True, "k": BEYOND_INT32},
         "k-year0": {"f": True, "k": [YEAR_0_IN_UTC, "CH1"]},
         "k-year10000": {"f": True, "k": [YEAR_10000_IN_UTC, "CH1"]},
         "i-int": {"f": True, "k": 1, "i": BEYOND_INT64}}
_TIMES = {"since-year0": {"f": True, "since": YEAR_0_IN_UTC},
          "until-year10000": {"f": True, "until": YEAR_10000_IN_UTC}}
# each listing with the token fields it reads
_CASES = [(path, name, payload) for path, fields in [
    ("/v1/conversations", {**_KEYS, "state-int": {"f": True, "state": BEYOND_INT64}}),
    ("/v1/conversations/c1/messages", {**_KEYS, **_TIMES,
                                       "order-int": {"f": True, "o": BEYOND_INT64}}),
    ("/v1/messages", {**_KEYS, **_TIMES}),
] for name, payload in fields.items()]


class TestPageTokensTheStoreCannotTake:
    @pytest.mark.parametrize(("path", "payload"), [(path, payload) for path, _, payload in _CASES],
                             ids=[f"{path}-{name}" for path, name, _ in _CASES])
    async def test_is_an_invalid_page_token_on_every_listing(self, api, path, payload):
        client, _ = api
        assert await refused(client, path, {"page_token": token(payload)}) == \
            "invalid_page_token"

    async def test_the_largest_index_is_still_a_page_token_the_listing_answers(self, api):
        client, _ = api
        resp = await client.get("/v1/conversations/c1/messages", headers=AUTH, params={
            "page_token": token({"f": False, "k": 2**31 - 1, "o": "asc"})})
        assert resp.status == 200
        assert (await resp.json())["data"] == []


class TestParametersTheStoreCannotTake:
    @pytest.mark.parametrize("path", LISTINGS[1:])
    @pytest.mark.parametrize("query", [
        {"since": YEAR_0_IN_UTC}, {"until": YEAR_10000_IN_UTC},
    ])
    async def test_a_time_outside_the_years_1_to_9999_in_utc_is_refused(
            self, api, path, query):
        client, _ = api
        assert await refused(client, path, query) == "invalid_parameter"

    @pytest.mark.parametrize("anchor", [str(2**31), str(2**63 - 1)])
    async def test_an_anchor_past_a_message_index_is_refused(self, api, anchor):
        client, _ = api
        assert await refused(client, "/v1/conversations/c1/messages",
                             {"anchor": anchor}) == "invalid_parameter"
