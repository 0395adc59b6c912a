"""Phone numbers at the API: exact E.164 only (``+``, 7 to 15 ASCII digits, nothing
else), as docs/api.md says; refusals show the caller its own input as given, while the
log masks it."""

from __future__ import annotations

import io
import logging

import pytest

from gateway.logs import setup_logging
from tests.fixtures.api_app import (
    AUTH,
    BACKENDS,
    OTHER_PROXY,
    PHONE,
    PHONE_2,
    PROXY,
    api_with_conversation,
)


@pytest.fixture(params=BACKENDS)
async def api(aiohttp_client, tmp_path, request):  # type: ignore[no-untyped-def]
    return await api_with_conversation(aiohttp_client, tmp_path, request.param)


async def add(client, address: str, proxy: str = PROXY):  # type: ignore[no-untyped-def]
    resp = await client.post("/v1/conversations/c1/participants",
                             json={"address": address, "proxy_address": proxy}, headers=AUTH)
    return resp.status, await resp.json()


NOT_EXACT = {
    "spaces": "+1 415 555 0123",
    "dashes": "+1-415-555-0123",
    "brackets": "+1 (415) 555-0123",
    "dots": "+1.415.555.0123",
    "trailing newline": PHONE + "\n",
    "leading space": " " + PHONE,
    "arabic-indic digits": "+" + "".join(chr(0x660 + int(d)) for d in PHONE[1:]),
    "fullwidth digits": "+" + "".join(chr(0xFF10 + int(d)) for d in PHONE[1:]),
    "no plus": PHONE[1:],
    "leading zero": "+0" + PHONE[2:],
    "16 digits": "+1" + "4" * 15,
    "6 digits": "+141555",
}


class TestOnlyExactE164IsAccepted:
    @pytest.mark.parametrize("raw", NOT_EXACT.values(), ids=NOT_EXACT.keys())
    @pytest.mark.parametrize("field", ["address", "proxy_address"])
    async def test_anything_but_exact_e164_is_an_invalid_address(self, api, raw, field):
        client, _ = api
        status, body = await (add(client, raw) if field == "address"
                              else add(client, PHONE, raw))
        assert status == 400 and body["code"] == "invalid_address", body
        assert body["error"] == (f"{field} {raw!r} is not an E.164 number ('+' and 7 to "
                                 "15 digits, nothing else)")

    async def test_exact_but_impossible_for_its_country_is_refused_too(self, api):
        client, _ = api
        status, body = await add(client, "+14155550")  # too short for the US plan
        assert status == 400 and body["code"] == "invalid_address"
        assert body["error"] == ("address '+14155550' is not an E.164 number (impossible "
                                 "number)")

    async def test_exact_e164_is_stored_as_given(self, api):
        client, _ = api
        status, body = await add(client, PHONE)
        assert status == 201 and body["address"] == PHONE and body["proxy_address"] == PROXY


class TestRefusalsShowTheCallersNumberAndTheLogMasksIt:
    @pytest.fixture
    def log_text(self):  # type: ignore[no-untyped-def]
        root = logging.getLogger()
        level = root.level
        stream = io.StringIO()
        handler = setup_logging("plain", "INFO", stream=stream)
        yield stream
        root.removeHandler(handler)
        root.setLevel(level)

    @pytest.mark.parametrize(("address", "proxy", "number", "expected"), [
        (PHONE, PHONE_2, PHONE_2,
         f"proxy_address {PHONE_2} is not one of the gateway's numbers"),
        (OTHER_PROXY, PROXY, OTHER_PROXY,
         f"address {OTHER_PROXY} is one of the gateway's own numbers"),
        (PHONE + "\n", PROXY, PHONE,
         f"address {PHONE + chr(10)!r} is not an E.164 number ('+' and 7 to 15 digits, "
         "nothing else)"),
    ])
    async def test_the_answer_holds_the_number_as_given_and_the_log_masked(
            self, api, log_text, address, proxy, number, expected):
        client, _ = api
        status, body = await add(client, address, proxy)
        assert status in (400, 422) and body["error"] == expected
        logged = log_text.getvalue()
        assert "refused: " in logged
        assert number not in logged
        assert f"+1******{number[-4:]}" in logged

    async def test_the_served_channels_name_the_number_as_given(self, api):
        client, _ = api
        resp = await client.post("/v1/conversations/c1/participants", headers=AUTH, json={
            "address": PHONE, "proxy_address": OTHER_PROXY, "channel": "whatsapp"})
        assert resp.status == 422
        assert (await resp.json())["error"] == (
            f"proxy_address {OTHER_PROXY} is not served on whatsapp by any rule (only on sms)")
