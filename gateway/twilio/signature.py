"""X-Twilio-Signature: checked with twilio's own ``RequestValidator``.

The URL must be the one Twilio requested, i.e. the configured public URL plus the path,
never ``request.url`` (behind a proxy aiohttp sees its own address, and it ignores
``Forwarded`` on purpose). The form must be the raw MultiDict: the signature covers every
value of a repeated key, which ``dict(form)`` would drop.
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator

from gateway.errors import InvalidSignature

SIGNATURE_HEADER = "X-Twilio-Signature"


def verify_signature(
    auth_token: str | None, url: str, form: Mapping[str, object], signature: str | None,
) -> None:
    """Raises ``InvalidSignature`` unless ``signature`` is Twilio's for ``url`` + ``form``.

    Fails closed: without an auth token nothing is accepted.
    """
    if not auth_token:
        raise InvalidSignature("no Twilio auth token configured; refusing unverifiable webhooks")
    if not signature:
        raise InvalidSignature(f"missing {SIGNATURE_HEADER}")
    if not all(isinstance(value, str) for value in _values(form)):
        # Twilio posts urlencoded text; a multipart file cannot be part of its signature.
        raise InvalidSignature("form is not urlencoded text")
    if not RequestValidator(auth_token).validate(url, form, signature):
        raise InvalidSignature(f"{SIGNATURE_HEADER} does not match")


def _values(form: Mapping[str, object]) -> list[object]:
    getall = getattr(form, "getall", None)  # a MultiDict: every value of a repeated key
    if getall is None:
        return list(form.values())
    return [value for key in set(form) for value in getall(key)]


def sign(auth_token: str, url: str, form: Mapping[str, str]) -> str:
    """The signature Twilio would send for this request (for the simulator and tests)."""
    signature: str = RequestValidator(auth_token).compute_signature(url, form)
    return signature
