"""Twilio's webhook wire format, mapped in one place.

The form fields Twilio posts (``MessageSid``, ``From``, ``MediaUrl0``, ``MessageStatus``
...) are named here and nowhere else in the gateway; the rest of the code sees
``InboundText`` and ``StatusUpdate``. Everything is validated on the way in: a missing
field or a number that is not E.164 raises ``BadRequest`` with a reason the handler can
return as-is.

Parsers take any mapping, so aiohttp's ``MultiDictProxy`` (what ``await request.post()``
returns) is passed straight through. A repeated key keeps its first value; Twilio never
repeats the fields read here. Values that are not text (a multipart file) are refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

from gateway.domain.ids import PhoneNumber
from gateway.domain.models import Channel, DeliveryState, Media
from gateway.domain.phones import parse_phone
from gateway.errors import BadRequest

Form: TypeAlias = Mapping[str, object]

WHATSAPP_PREFIX = "whatsapp:"

# Twilio caps a message at ten media items.
MAX_MEDIA = 10

# Sids are opaque (SM…, MM…, AC…), but they are plain ASCII tokens. Refusing anything else
# keeps odd bytes out of logs and the store without betting on the exact shape.
_SID = re.compile(r"[A-Za-z0-9]{2,64}")

# Twilio's MessageStatus values for outbound messages, mapped onto our delivery states.
# "queued", "accepted", "scheduled" and "sending" all mean Twilio holds the message, which
# is what our "sent" means (the provider accepted it); the store only ever moves a
# delivery forward, so an early "queued" can never undo a later "delivered".
_STATUS = {
    "accepted": DeliveryState.SENT,
    "scheduled": DeliveryState.SENT,
    "queued": DeliveryState.SENT,
    "sending": DeliveryState.SENT,
    "sent": DeliveryState.SENT,
    # Some parts arrived, some did not: neither proof of delivery nor a failure. A later
    # definite status can still move it on.
    "partially_delivered": DeliveryState.SENT,
    "delivered": DeliveryState.DELIVERED,
    "read": DeliveryState.READ,
    "undelivered": DeliveryState.UNDELIVERED,
    "failed": DeliveryState.FAILED,
    "canceled": DeliveryState.FAILED,
}


# Twilio's status callbacks carry ErrorCode but rarely ErrorMessage; the common codes are
# described here so a failed delivery tells the wallet something readable.
_ERROR_DESCRIPTIONS = {
    21211: "invalid 'To' phone number",
    21408: "sending to this region is not enabled",
    21610: "the recipient has unsubscribed (replied STOP)",
    21612: "this number cannot be reached from our number",
    21614: "not a mobile number",
    30003: "unreachable destination handset",
    30004: "message blocked by the recipient or carrier",
    30005: "unknown destination handset",
    30006: "landline or unreachable carrier",
    30007: "filtered by the carrier as spam",
    30008: "unknown delivery error",
    63016: "outside WhatsApp's 24-hour window; a template is required",
}


def describe_error(code: int | None) -> str | None:
    return _ERROR_DESCRIPTIONS.get(code) if code is not None else None


@dataclass(frozen=True, slots=True)
class InboundText:
    """A text a phone sent to one of our numbers."""

    message_sid: str
    account_sid: str
    from_: PhoneNumber
    to: PhoneNumber
    channel: Channel
    body: str
    media: tuple[Media, ...]


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A status callback for a message we sent."""

    message_sid: str
    account_sid: str
    state: DeliveryState
    error_code: int | None
    error_message: str | None


def parse_inbound(form: Form) -> InboundText:
    message_sid = _sid(form, "MessageSid", fallback="SmsMessageSid")
    account_sid = _sid(form, "AccountSid")
    from_channel, from_ = _address(form, "From")
    to_channel, to = _address(form, "To")
    if from_channel is not to_channel:
        raise BadRequest("From and To are on different channels (whatsapp: prefix on one only)")
    return InboundText(
        message_sid=message_sid,
        account_sid=account_sid,
        from_=from_,
        to=to,
        channel=from_channel,
        body=_text(form, "Body"),
        media=_media(form),
    )


def parse_status(form: Form) -> StatusUpdate:
    message_sid = _sid(form, "MessageSid", fallback="SmsSid")
    account_sid = _sid(form, "AccountSid")
    raw_status = (_text(form, "MessageStatus") or _text(form, "SmsStatus")).strip().lower()
    if not raw_status:
        raise BadRequest("missing MessageStatus")
    state = _STATUS.get(raw_status)
    if state is None:
        raise BadRequest(f"MessageStatus {raw_status[:32]!r} is not an outbound message status")
    error_code = _error_code(form)
    error_message = _text(form, "ErrorMessage").strip() or describe_error(error_code)
    return StatusUpdate(
        message_sid=message_sid,
        account_sid=account_sid,
        state=state,
        error_code=error_code,
        error_message=error_message,
    )


def to_address(phone: PhoneNumber, channel: Channel) -> str:
    """The address Twilio expects for a phone on a channel (``whatsapp:+1…`` or ``+1…``)."""
    if channel is Channel.WHATSAPP:
        return WHATSAPP_PREFIX + phone
    if channel is Channel.SMS:
        return phone
    raise ValueError(f"{channel} is not a phone channel")


# --- field helpers -----------------------------------------------------------------------


def _text(form: Form, key: str) -> str:
    value = form.get(key, "")
    if not isinstance(value, str):
        raise BadRequest(f"{key} is not text")
    return value


def _sid(form: Form, key: str, *, fallback: str | None = None) -> str:
    value = _text(form, key) or (_text(form, fallback) if fallback else "")
    if not value:
        raise BadRequest(f"missing {key}")
    if not _SID.fullmatch(value):
        raise BadRequest(f"{key} is not a Twilio sid")
    return value


def _address(form: Form, key: str) -> tuple[Channel, PhoneNumber]:
    raw = _text(form, key).strip()
    if not raw:
        raise BadRequest(f"missing {key}")
    channel = Channel.SMS
    if raw.lower().startswith(WHATSAPP_PREFIX):
        channel = Channel.WHATSAPP
        raw = raw[len(WHATSAPP_PREFIX):]
    try:
        return channel, parse_phone(raw)
    except BadRequest as exc:
        raise BadRequest(f"{key}: {exc}") from None


def _media(form: Form) -> tuple[Media, ...]:
    raw_count = _text(form, "NumMedia").strip() or "0"
    if not raw_count.isdigit():
        raise BadRequest("NumMedia is not a number")
    count = int(raw_count)
    if count > MAX_MEDIA:
        raise BadRequest(f"NumMedia {count} is above Twilio's limit of {MAX_MEDIA}")
    media = []
    for i in range(count):
        url = _text(form, f"MediaUrl{i}").strip()
        if not url.startswith(("https://", "http://")):
            raise BadRequest(f"MediaUrl{i} missing or not an http(s) URL")
        content_type = _text(form, f"MediaContentType{i}").strip() or None
        media.append(Media(url=url, content_type=content_type))
    return tuple(media)


def _error_code(form: Form) -> int | None:
    raw = _text(form, "ErrorCode").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise BadRequest("ErrorCode is not a number")
    return int(raw)
