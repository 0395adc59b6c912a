"""Twilio's webhooks: verify, parse, hand to the relay, answer.

Both endpoints check X-Twilio-Signature against ``server.public_url`` + the request's
path and query (never ``request.url``: behind a proxy that is not the URL Twilio signed),
and fail closed when no auth token is configured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web
from multidict import MultiDictProxy

from gateway.appkeys import CONFIG, METRICS, RELAY
from gateway.domain.relay import PhoneText
from gateway.errors import BadRequest, InvalidSignature
from gateway.twilio.data import parse_inbound, parse_status
from gateway.twilio.signature import verify_signature

log = logging.getLogger(__name__)

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
MESSAGES_PATH = "/twilio/messages"
STATUS_PATH = "/twilio/status"

Form = MultiDictProxy[str | bytes | bytearray | web.FileField]
T = TypeVar("T")


async def _form(request: web.Request, endpoint: str) -> Form:
    """The request's form. A body above the app's client_max_size is a 413; one that cannot
    be decoded or parsed is a 400 (aiohttp would raise it as a 500), both counted."""
    metrics = request.app[METRICS]
    try:
        return await request.post()
    except web.HTTPRequestEntityTooLarge:
        metrics.webhook_rejected.labels(endpoint, "too_large").inc()
        raise
    except UnicodeDecodeError as exc:
        reason = "encoding"
        problem = (f"body is not valid {exc.encoding} "
                   f"(byte 0x{exc.object[exc.start]:02x} at offset {exc.start})")
        detail = problem
    except LookupError as exc:  # a Content-Type names a charset Python does not know
        reason = "encoding"
        problem = detail = f"cannot decode the body: {str(exc)[:100]}"
    except ValueError as exc:  # multipart without a boundary, or with broken parts
        reason = "form"
        problem = "malformed form body"
        detail = f"{problem}: {str(exc)[:200]}"
    # the log leaves out aiohttp's wording: it may quote the body, and bodies carry numbers
    log.warning("%s webhook refused: %s", endpoint, problem)
    metrics.webhook_rejected.labels(endpoint, reason).inc()
    raise web.HTTPBadRequest(text=detail)


async def _verified_form(request: web.Request, endpoint: str) -> Form:
    config = request.app[CONFIG]
    metrics = request.app[METRICS]
    form = await _form(request, endpoint)
    token = config.twilio.auth_token.get_secret_value() if config.twilio.auth_token else None
    url = config.server.public_url.rstrip("/") + request.rel_url.path_qs
    try:
        verify_signature(token, url, form, request.headers.get("X-Twilio-Signature"))
    except InvalidSignature:
        metrics.webhook_rejected.labels(endpoint, "signature").inc()
        raise web.HTTPForbidden(text="invalid signature") from None
    account = form.get("AccountSid")
    if account != config.twilio.account_sid:
        metrics.webhook_rejected.labels(endpoint, "account").inc()
        raise web.HTTPForbidden(text="AccountSid does not match this gateway's account")
    return form


async def _parsed(request: web.Request, endpoint: str, parse: Callable[[Form], T]) -> T:
    """The verified form, parsed; malformed input is a 400 naming what is wrong."""
    form = await _verified_form(request, endpoint)
    try:
        return parse(form)
    except BadRequest as exc:
        request.app[METRICS].webhook_rejected.labels(endpoint, "malformed").inc()
        raise web.HTTPBadRequest(text=str(exc)) from None


async def inbound_message(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    with metrics.handler_latency.labels("messages").time():
        inbound = await _parsed(request, "messages", parse_inbound)
        outcome = await request.app[RELAY].receive_phone_text(PhoneText(
            external_id=inbound.message_sid, from_=inbound.from_, to=inbound.to,
            channel=inbound.channel, body=inbound.body, media=inbound.media))
        metrics.inbound.labels(inbound.channel.value, outcome.value).inc()
        return web.Response(text=EMPTY_TWIML, content_type="text/xml")


async def delivery_status(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    with metrics.handler_latency.labels("status").time():
        update = await _parsed(request, "status", parse_status)
        await request.app[RELAY].phone_status(
            update.message_sid, update.state, error_code=update.error_code,
            error_message=update.error_message)
        return web.Response(status=204)


def add_twilio_routes(app: web.Application) -> None:
    app.router.add_post(MESSAGES_PATH, inbound_message)
    app.router.add_post(STATUS_PATH, delivery_status)
