"""Which addresses and hosts the media fetcher may reach, and where credentials go."""

from __future__ import annotations

import ipaddress

import pytest
from yarl import URL

from gateway.media.addresses import parse_address, refusal
from gateway.media.fetch import Credentials, twilio_credentials


class TestRefusedAddresses:
    @pytest.mark.parametrize("address", [
        "169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200", "192.0.0.192",
        "::ffff:169.254.169.254",
    ])
    def test_cloud_metadata_is_refused_even_with_loopback_allowed(self, address: str) -> None:
        reason = refusal(ipaddress.ip_address(address), allow_loopback=True)
        assert reason is not None and "metadata" in reason

    @pytest.mark.parametrize(("address", "why"), [
        ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
        ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"), ("100.64.0.1", "public"),
        ("169.254.1.1", "link-local"), ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address, not a bind
        ("::", "unspecified"),
        ("240.0.0.1", "private"), ("255.255.255.255", "private"),
        ("192.0.2.10", "private"), ("198.18.0.1", "private"),
        ("::ffff:127.0.0.1", "inside an IPv6"), ("::ffff:10.0.0.1", "inside an IPv6"),
        ("2002:7f00:1::", "inside an IPv6"),  # 6to4 around 127.0.0.1
        ("2002:a00:1::", "inside an IPv6"),  # 6to4 around 10.0.0.1
        ("64:ff9b::a00:1", "inside an IPv6"),  # NAT64 around 10.0.0.1
    ])
    def test_non_public_addresses_are_refused(self, address: str, why: str) -> None:
        reason = refusal(ipaddress.ip_address(address))
        assert reason is not None and why in reason

    @pytest.mark.parametrize("address", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
    def test_loopback_is_allowed_only_when_asked(self, address: str) -> None:
        assert refusal(ipaddress.ip_address(address), allow_loopback=True) is None
        assert refusal(ipaddress.ip_address(address)) is not None

    @pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111",
                                         "64:ff9b::808:808"])
    def test_public_addresses_are_allowed(self, address: str) -> None:
        assert refusal(ipaddress.ip_address(address)) is None

    def test_literal_hosts_are_read_as_addresses(self) -> None:
        assert parse_address("[::1]") == ipaddress.ip_address("::1")
        assert parse_address("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
        assert parse_address("media.example.org") is None


class TestCredentialScopes:
    TWILIO = twilio_credentials("AC" + "1" * 32, "token")

    @pytest.mark.parametrize("url", [
        "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
        "https://api.dublin.ie1.twilio.com/2010-04-01/x",
        "https://mms.twiliocdn.com/AC1/abc", "https://media.twiliocdn.com/x",
        "https://API.Twilio.com./x",
    ])
    def test_twilio_credentials_cover_twilios_media_hosts(self, url: str) -> None:
        assert self.TWILIO.covers(URL(url))

    @pytest.mark.parametrize("url", [
        "http://api.twilio.com/x",  # never in the clear
        "https://api.twilio.com.evil.example/x", "https://evil-twiliocdn.com/x",
        "https://twiliocdn.com/x", "https://twiliocdn.com.evil.example/x",
        "https://www.twilio.com/x", "https://s3-external-1.amazonaws.com/media.twiliocdn.com/x",
        "https://api..twilio.com/x",
    ])
    def test_twilio_credentials_go_nowhere_else(self, url: str) -> None:
        assert not self.TWILIO.covers(URL(url))

    def test_an_origin_scope_is_exactly_that_scheme_host_and_port(self) -> None:
        sim = Credentials("AC1", "token", ("http://127.0.0.1:8788",))
        assert sim.covers(URL("http://127.0.0.1:8788/2010-04-01/x"))
        assert not sim.covers(URL("http://127.0.0.1:8789/x"))
        assert not sim.covers(URL("https://127.0.0.1:8788/x"))
        assert not sim.covers(URL("http://localhost:8788/x"))

    def test_the_password_stays_out_of_the_repr(self) -> None:
        assert "token" not in repr(self.TWILIO)
