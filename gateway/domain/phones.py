"""Phone numbers: parsing into E.164, their country, and masking for logs.

Everything that crosses into the domain as a phone number has been through
``parse_phone``, so the rest of the code compares plain E.164 strings.
"""

from __future__ import annotations

import re

import phonenumbers

from gateway.domain.ids import PhoneNumber
from gateway.errors import BadRequest

# What looks like an E.164 number anywhere in a log line: "+" (or "%2B", URL-encoded as
# in a webhook body), then 7 to 15 digits, not glued to other digits. Loose on purpose:
# masking a non-number costs nothing, leaking a number does.
MASK_PATTERN = re.compile(r"(?<![\w+])(?P<plus>\+|%2[Bb])(?P<digits>\d{7,15})(?!\d)")

_KEEP_TAIL = 4

_REASONS = {
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
    phonenumbers.ValidationResult.INVALID_LENGTH: "wrong length for its country",
}


def parse_phone(raw: str) -> PhoneNumber:
    """Strict E.164 parse: a leading "+", a valid number for its country.

    Spaces, dashes, dots and brackets between digits are tolerated (people type them);
    numbers without a country code are not, since nothing tells us which country.
    The number must be *possible* (a known country code, a length its plan allows), not
    *valid* (in an allocated range): the fictional 555-01XX range used in docs, tests
    and the simulator is not allocated, and allocations move faster than the metadata.
    Twilio itself refuses numbers that do not exist (error 21211).
    Raises ``BadRequest`` with a reason a caller can show; the reason never repeats the
    number, since it may end up in a log.
    """
    text = raw.strip()
    if not text:
        raise BadRequest("empty phone number")
    if not text.startswith("+"):
        raise BadRequest("not an E.164 number (no leading '+')")
    if re.search(r"[^\d\s().+-]", text) or text.count("+") != 1:
        raise BadRequest("not an E.164 number (unexpected characters)")
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise BadRequest(f"not an E.164 number ({exc.args[0] if exc.args else exc})") from None
    reason = phonenumbers.is_possible_number_with_reason(parsed)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE:
        raise BadRequest(f"not an E.164 number ({_REASONS.get(reason, 'impossible number')})")
    return PhoneNumber(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


# E.164 exactly as written: "+", a digit 1-9, then 6 to 14 more ASCII digits. Used with
# fullmatch, so no trailing newline slips through as "$" would let it.
E164_EXACT = re.compile(r"\+[1-9][0-9]{6,14}")


def parse_e164(raw: str) -> PhoneNumber:
    """A number given as exact E.164 — no separators, no spaces, no other digits than
    ASCII ones, nothing around it — that is also possible for its country (as in
    ``parse_phone``). For input from programs (the API), where tolerating what people
    type would only hide a caller's bug. Raises ``BadRequest`` naming the rule broken,
    without the number."""
    if E164_EXACT.fullmatch(raw) is None:
        raise BadRequest("not an E.164 number ('+' and 7 to 15 digits, nothing else)")
    return parse_phone(raw)


def is_phone(raw: str) -> bool:
    try:
        parse_phone(raw)
    except BadRequest:
        return False
    return True


def country_of(phone: str) -> str | None:
    """ISO 3166-1 alpha-2 region of an E.164 number ("US", "GB"), or None when the
    number belongs to no single region (e.g. +800 international freephone)."""
    try:
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return None
    region: str | None = phonenumbers.region_code_for_number(parsed)
    if region is None and parsed.country_code is not None:
        # Not in an allocated range (e.g. 555-01XX): fall back to the country code's
        # main region, which is what a screen by country means for such numbers.
        region = phonenumbers.region_code_for_country_code(parsed.country_code)
    if region in (None, "ZZ", "001"):
        return None
    return region


def is_country_code(code: str) -> bool:
    """Whether ``code`` is an ISO alpha-2 region that has phone numbers."""
    return code in phonenumbers.SUPPORTED_REGIONS


def mask(phone: str) -> str:
    """"+15550100123" -> "+1******0123": country code and last four digits kept, so
    a log still tells numbers apart without revealing them."""
    digits = phone[1:] if phone.startswith("+") else phone
    try:
        cc_len = len(str(phonenumbers.parse("+" + digits, None).country_code))
    except phonenumbers.NumberParseException:
        cc_len = 1
    hidden = max(len(digits) - cc_len - _KEEP_TAIL, 0)
    if hidden == 0:
        return "+" + "*" * len(digits)
    return "+" + digits[:cc_len] + "*" * hidden + digits[cc_len + hidden:]


def mask_text(text: str) -> str:
    """Masks every E.164-looking number inside free text."""
    return MASK_PATTERN.sub(lambda m: m.group("plus") + mask("+" + m.group("digits"))[1:], text)
