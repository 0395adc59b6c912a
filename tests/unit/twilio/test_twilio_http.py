from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from gateway.twilio.http import GatewayHttpClient
from gateway.twilio.sender import _retry_after


class TestRewritingTwilioUrls:
    @pytest.mark.parametrize(("url", "expected"), [
        ("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json",
         "http://127.0.0.1:9999/2010-04-01/Accounts/AC1/Messages.json"),
        ("https://api.dublin.ie1.twilio.com/2010-04-01/Accounts/AC1/Messages.json?To=%2B1&Page=1",
         "http://127.0.0.1:9999/2010-04-01/Accounts/AC1/Messages.json?To=%2B1&Page=1"),
        ("https://messaging.twilio.com/v1/Services", "http://127.0.0.1:9999/v1/Services"),
        ("https://twilio.com.example.org/x", "https://twilio.com.example.org/x"),
        ("https://nottwilio.com/x", "https://nottwilio.com/x"),
        ("http://api.twilio.com/x", "http://api.twilio.com/x"),
    ])
    async def test_only_https_twilio_hosts_are_sent_to_the_base_url(
        self, url: str, expected: str,
    ) -> None:
        client = GatewayHttpClient(timeout=1.0, base_url="http://127.0.0.1:9999")
        try:
            assert client.rewrite(url) == expected
        finally:
            await client.close()

    async def test_a_base_url_with_a_path_keeps_it_as_a_prefix(self) -> None:
        client = GatewayHttpClient(timeout=1.0, base_url="http://sim.local/twilio/")
        try:
            assert client.rewrite("https://api.twilio.com/2010-04-01/A.json?x=1") == \
                "http://sim.local/twilio/2010-04-01/A.json?x=1"
        finally:
            await client.close()

    async def test_without_a_base_url_nothing_changes(self) -> None:
        client = GatewayHttpClient(timeout=1.0)
        try:
            assert client.rewrite("https://api.twilio.com/x") == "https://api.twilio.com/x"
        finally:
            await client.close()


class TestRetryAfter:
    def test_seconds(self) -> None:
        assert _retry_after({"Retry-After": "12"}) == 12.0
        assert _retry_after({"Retry-After": "0.5"}) == 0.5

    def test_an_http_date(self) -> None:
        when = datetime.now(UTC) + timedelta(seconds=30)
        seconds = _retry_after({"Retry-After": format_datetime(when, usegmt=True)})
        assert seconds is not None and 28 <= seconds <= 30

    @pytest.mark.parametrize("headers", [None, {}, {"Retry-After": "soon"}])
    def test_missing_or_unreadable_is_none(self, headers: dict[str, str] | None) -> None:
        assert _retry_after(headers) is None

    def test_a_date_in_the_past_is_zero(self) -> None:
        when = datetime.now(UTC) - timedelta(minutes=1)
        assert _retry_after({"Retry-After": format_datetime(when, usegmt=True)}) == 0.0
