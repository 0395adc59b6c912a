"""Twilio's wire format as the simulator speaks it: constants, error bodies, request
parsing and the Messages list filters.

Written out independently of ``gateway.twilio.data`` on purpose: a simulator that shared
the gateway's field names would repeat the gateway's mistakes.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import phonenumbers
from aiohttp import web

if TYPE_CHECKING:
    from gateway.testing.twilio_sim.records import SimMessage

API_VERSION = "2010-04-01"
WHATSAPP = "whatsapp:"
MAX_BODY = 1600
E164 = re.compile(r"\+[1-9]\d{6,14}")

ERROR_MESSAGES = {
    21211: "Invalid 'To' Phone Number",
    21408: "Permission to send an SMS has not been enabled for the region",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
    30003: "Unreachable destination handset",
    30005: "Unknown destination handset",
    63016: "Failed to send freeform message because you are outside the allowed window. "
           "If you are using WhatsApp, please use a Message Template.",
}



def validate_create(to: str, from_: str, body: str, media: tuple[str, ...],
              content_sid: str | None) -> tuple[int, int, str] | None:
    if not to:
        return 400, 21604, "A 'To' phone number is required."
    if not from_:
        return 400, 21603, "A 'From' phone number is required."
    if not body and not media and not content_sid:
        return 400, 21602, "Message body is required."
    if len(body) > MAX_BODY:
        return 400, 21617, "The concatenated message body exceeds the 1600 character limit."
    if to.startswith(WHATSAPP) != from_.startswith(WHATSAPP):
        return 400, 21910, "Invalid From and To pair. From and To should be of the same channel"
    if not E164.fullmatch(strip_channel(to)):
        return 400, 21211, f"Invalid 'To' Phone Number: {to}"
    if not E164.fullmatch(strip_channel(from_)):
        return 400, 21212, f"Invalid 'From' Phone Number: {from_}"
    return None


def listed(message: SimMessage, query: Mapping[str, str]) -> bool:
    if "To" in query and message.to != query["To"]:
        return False
    if "From" in query and message.from_ != query["From"]:
        return False
    for key in ("DateSent", "DateSent<", "DateSent>"):
        if key not in query:
            continue
        if message.date_sent is None:
            return False
        if not date_matches(message.date_sent, key[-1] if key != "DateSent" else "=",
                             query[key]):
            return False
    return True


def date_matches(sent: datetime, op: str, raw: str) -> bool:
    """Twilio's DateSent filters: ``DateSent>=x`` (on or after), ``DateSent<=x`` (on or
    before), ``DateSent=x``; x is a day (YYYY-MM-DD) or a time (YYYY-MM-DDTHH:MM:SSZ)."""
    raw = raw.strip()
    if len(raw) == 10:
        day = date.fromisoformat(raw)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        end = start + timedelta(days=1)
        if op == ">":
            return sent >= start
        if op == "<":
            return sent < end
        return start <= sent < end
    moment = datetime.strptime(raw, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    sent = sent.replace(microsecond=0)
    if op == ">":
        return sent >= moment
    if op == "<":
        return sent <= moment
    return sent == moment


def error_response(status: int, code: int, message: str, *,
           headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
         "status": status}, status=status, headers=headers)


def unauthorized() -> web.HTTPUnauthorized:
    body = error_response(401, 20003, "Authenticate").text
    return web.HTTPUnauthorized(text=body, content_type="application/json",
                                headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})


def garbled() -> web.Response:
    return web.Response(status=201, text="<html>upstream error</html>", content_type="text/html")


def basic_credentials(header: str) -> tuple[str, str, str]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return "", "", ""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("latin1")
    except (binascii.Error, ValueError):
        return "", "", ""
    return decoded.partition(":")


def text_field(form: Mapping[str, Any], key: str) -> str:
    value = form.get(key, "")
    return value if isinstance(value, str) else ""


def strip_channel(address: str) -> str:
    address = address.strip()
    if address.startswith(WHATSAPP):
        address = address[len(WHATSAPP):]
    if address and address[0] != "+" and address.isdigit():
        address = "+" + address  # a "+" that a query string turned into a space
    return address


def country_of(phone: str) -> str:
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(strip_channel(phone), None))
    except phonenumbers.NumberParseException:
        return ""
    return str(region or "")


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def seconds_header(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"

