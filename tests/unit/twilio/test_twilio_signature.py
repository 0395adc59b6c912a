"""Signature checks against the fixed vector published in twilio-python's own unit tests
(tests/unit/test_request_validator.py): token 12345 and this URL and form."""

import pytest
from multidict import MultiDict

from gateway.errors import InvalidSignature
from gateway.twilio.signature import sign, verify_signature

TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
FORM = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}
EXPECTED = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
# The same URL with a form that repeats a key (published alongside).
REPEATED = MultiDict([("Sid", "CA123"), ("SidAccount", "AC123"),
                      ("Digits", "5678"), ("Digits", "1234")])
REPEATED_EXPECTED = "IK+Dwps556ElfBT0I3Rgjkr1wJU="


class TestPublishedVector:
    def test_the_published_signature_is_accepted(self) -> None:
        verify_signature(TOKEN, URL, FORM, EXPECTED)

    def test_sign_reproduces_the_published_signature(self) -> None:
        assert sign(TOKEN, URL, FORM) == EXPECTED

    def test_a_repeated_key_is_signed_with_every_value(self) -> None:
        verify_signature(TOKEN, URL, REPEATED, REPEATED_EXPECTED)
        dropped = dict(REPEATED)  # what dict(await request.post()) would do
        with pytest.raises(InvalidSignature):
            verify_signature(TOKEN, URL, dropped, REPEATED_EXPECTED)

    def test_an_explicit_default_port_is_accepted(self) -> None:
        verify_signature(TOKEN, URL.replace(".com", ".com:443"), FORM, EXPECTED)


class TestRejectedSignatures:
    def test_a_tampered_field_is_refused(self) -> None:
        with pytest.raises(InvalidSignature, match="does not match"):
            verify_signature(TOKEN, URL, {**FORM, "Digits": "9999"}, EXPECTED)

    def test_an_added_field_is_refused(self) -> None:
        with pytest.raises(InvalidSignature, match="does not match"):
            verify_signature(TOKEN, URL, {**FORM, "Body": "hi"}, EXPECTED)

    def test_another_url_is_refused(self) -> None:
        with pytest.raises(InvalidSignature, match="does not match"):
            verify_signature(TOKEN, "https://mycompany.com/myapp.php?foo=1&bar=3", FORM,
                             EXPECTED)

    def test_another_token_is_refused(self) -> None:
        with pytest.raises(InvalidSignature, match="does not match"):
            verify_signature("54321", URL, FORM, EXPECTED)

    @pytest.mark.parametrize("signature", [None, ""])
    def test_a_missing_signature_is_refused(self, signature: str | None) -> None:
        with pytest.raises(InvalidSignature, match="missing"):
            verify_signature(TOKEN, URL, FORM, signature)

    @pytest.mark.parametrize("token", [None, ""])
    def test_without_an_auth_token_nothing_is_accepted(self, token: str | None) -> None:
        with pytest.raises(InvalidSignature, match="no Twilio auth token"):
            verify_signature(token, URL, FORM, EXPECTED)
