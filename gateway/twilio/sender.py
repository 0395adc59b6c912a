"""``PhoneNetwork`` over Twilio's Messages API, with the library's errors translated into
ours at this edge (``TwilioRestException`` for HTTP errors, the built-in ``TimeoutError`` and
aiohttp's connection errors for the rest: each checked against the simulator).

Sends never use the library's ``max_retries``: it re-POSTs on 5xx, which can create the
message twice, ignores ``Retry-After`` and skips dropped connections. The outbox retries.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.rest import Client

from gateway.domain.ids import PhoneNumber
from gateway.domain.models import Channel
from gateway.domain.phones import mask, mask_text
from gateway.domain.ports import OutboundText, SentText
from gateway.errors import PermanentSendError, RetryableSendError, UnknownOutcomeError
from gateway.twilio.data import to_address
from gateway.twilio.http import GatewayHttpClient, recording

log = logging.getLogger(__name__)

# Twilio codes that come back with a 4xx but mean "not now" rather than "never".
_RETRYABLE_CODES = frozenset({
    14107,  # SMS send rate limit exceeded
    20429,  # too many requests
    21611,  # this From number has too many messages queued
    20500,  # internal error
    20503,  # service unavailable
})

# How far back find_sent pages through a phone's messages before giving up.
_FIND_LIMIT = 200


class TwilioPhoneNetwork:
    """Build with ``create()`` inside the running loop; ``close()`` on shutdown."""

    def __init__(self, client: Client, http: GatewayHttpClient) -> None:
        self._client = client
        self._http = http

    @classmethod
    def create(
        cls, *, account_sid: str, auth_token: str, api_base_url: str | None = None,
        timeout: float = 15.0, connect_timeout: float = 5.0,
    ) -> TwilioPhoneNetwork:
        http = GatewayHttpClient(timeout=timeout, connect_timeout=connect_timeout,
                                 base_url=api_base_url)
        client = Client(username=account_sid, password=auth_token, account_sid=account_sid,
                        http_client=http)
        return cls(client, http)

    async def close(self) -> None:
        await self._http.close()

    async def send(self, text: OutboundText) -> SentText:
        params: dict[str, Any] = {
            "to": to_address(text.to, text.channel),
            "from_": to_address(text.from_, text.channel),
        }
        if text.body is not None:
            params["body"] = text.body
        if text.media_urls:
            params["media_url"] = list(text.media_urls)
        if text.status_callback:
            params["status_callback"] = text.status_callback
        if text.content_sid:
            params["content_sid"] = text.content_sid
            if text.content_variables:
                params["content_variables"] = json.dumps(dict(text.content_variables))
        with recording() as rec:
            try:
                message = await self._client.messages.create_async(**params)
            except (TwilioRestException, TwilioServiceException) as exc:
                raise _rest_error(exc, rec.last_response) from exc
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                # A 2xx that is not JSON (or not text): the message may well exist.
                raise UnknownOutcomeError("Twilio answered the send with a non-JSON body") from exc
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # The connection was never made, so the request never left.
                raise RetryableSendError(f"could not reach Twilio: {exc.__class__.__name__}") \
                    from exc
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                # Sent (or possibly sent) and then no usable answer: a timeout, a dropped
                # connection (ServerDisconnectedError), a broken response.
                raise UnknownOutcomeError(
                    f"no answer from Twilio after sending: {exc.__class__.__name__}") from exc
        sid = getattr(message, "sid", None)
        if not sid:
            raise UnknownOutcomeError("Twilio answered the send without a message sid")
        log.debug("sent %s to %s", sid, mask(text.to))
        return SentText(provider_id=sid, status=str(message.status or ""))

    async def find_sent(
        self, *, to: PhoneNumber, from_: PhoneNumber, channel: Channel, sent_after: datetime,
        body: str | None, skip: Collection[str] = frozenset(),
    ) -> SentText | None:
        """The earliest message from ``from_`` to ``to`` created at or after ``sent_after``
        whose body is ``body`` up to whitespace (any body when None) and whose sid is not
        in ``skip`` (another delivery's message with the same text).

        Filters on To/From at Twilio and on ``date_created`` here, not on ``DateSent``: a
        message still queued at Twilio has no date_sent yet and would be missed, and
        re-sending it would deliver it twice. Lists come newest first, so paging stops at
        the first message older than ``sent_after``. The earliest match wins so that two
        equal texts in a row are matched in order.
        """
        found: SentText | None = None
        since = sent_after.replace(microsecond=0)  # Twilio's dates have whole seconds
        try:
            stream = await self._client.messages.stream_async(
                to=to_address(to, channel), from_=to_address(from_, channel), page_size=50,
                limit=_FIND_LIMIT)
            async for message in stream:
                created = message.date_created
                if created is not None and created < since:
                    break
                if message.sid not in skip and (body is None or _same_text(message.body, body)):
                    found = SentText(provider_id=message.sid, status=str(message.status or ""))
        except (TwilioException, ValueError) as exc:  # incl. JSON and text decoding errors
            raise RetryableSendError(f"could not list messages at Twilio: {exc}") from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # A lookup changes nothing at Twilio, so any failure is simply "try again".
            raise RetryableSendError(
                f"could not list messages at Twilio: {exc.__class__.__name__}") from exc
        return found


def _same_text(stored: str | None, sent: str) -> bool:
    """Twilio keeps the body it was given, but a stray change in whitespace must not make
    us send a message twice."""
    return stored is not None and stored.split() == sent.split()


def _rest_error(
    exc: TwilioRestException | TwilioServiceException, response: Any,
) -> RetryableSendError | PermanentSendError:
    status = int(exc.status)
    # A non-JSON error body leaves the HTTP status in ``code``: not a Twilio error code.
    code = exc.code if isinstance(exc.code, int) and exc.code != status else None
    message = _message(exc)
    if status == 429 or status >= 500 or code in _RETRYABLE_CODES or status in (401, 403):
        # 401/403 are the account's problem (bad credentials, suspended), not the
        # recipient's: retrying lets a fixed configuration still deliver.
        headers = getattr(response, "headers", None)
        return RetryableSendError(message, retry_after=_retry_after(headers),
                                  provider_code=code)
    return PermanentSendError(message, provider_code=code)


def _message(exc: TwilioRestException | TwilioServiceException) -> str:
    """Twilio's words, with any phone number in them masked: they end up in logs and in
    the delivery's error message."""
    if isinstance(exc, TwilioServiceException):
        text = f"HTTP {exc.status}: {exc.title}" + (f" ({exc.detail})" if exc.detail else "")
    else:
        text = f"HTTP {exc.status}: {exc.msg}"
    return mask_text(text)


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not headers:
        return None
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    delta: timedelta = when - datetime.now(when.tzinfo)
    return max(delta.total_seconds(), 0.0)
