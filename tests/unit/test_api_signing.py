"""Bearer-token matching and webhook signatures."""

from __future__ import annotations

from gateway.api.auth import token_matches
from gateway.api.webhooks import cursor_key, sign, verify


class TestTokenMatching:
    def test_any_configured_token_matches_and_nothing_else(self):
        tokens = ("first-token-aaaaaaaa", "second-token-bbbbbbb")
        assert token_matches("first-token-aaaaaaaa", tokens)
        assert token_matches("second-token-bbbbbbb", tokens)
        assert not token_matches("first-token-aaaaaaa", tokens)
        assert not token_matches("", tokens)
        assert not token_matches("first-token-aaaaaaaa", ())


class TestWebhookSignatures:
    def test_the_signature_is_hmac_sha256_over_timestamp_and_body(self):
        # the same computation a receiver in any language does
        import hashlib
        import hmac

        expected = hmac.new(b"s3cret", b"1700000000.{\"a\":1}", hashlib.sha256).hexdigest()
        assert sign("s3cret", 1700000000, b'{"a":1}') == f"t=1700000000,v1={expected}"

    def test_verification_rejects_tampering_other_secrets_and_stale_timestamps(self):
        header = sign("s3cret", 1700000000, b"body")
        assert verify("s3cret", header, b"body", now=1700000100)
        assert not verify("s3cret", header, b"Body", now=1700000100)
        assert not verify("other", header, b"body", now=1700000100)
        assert not verify("s3cret", header, b"body", now=1700001000)
        assert not verify("s3cret", "t=x,v1=00", b"body", now=1700000100)
        assert not verify("s3cret", "", b"body", now=1700000100)

    def test_each_url_keeps_its_own_cursor_key_without_showing_the_url(self):
        a, b = cursor_key("https://a.example/hook?token=x"), cursor_key("https://b.example/")
        assert a != b and "example" not in a and a.startswith("webhook:")
