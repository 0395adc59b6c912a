"""A Twilio stand-in for offline development and tests: shipped code, also runnable as
``gateway twilio-sim``.

It serves Twilio's Messages REST resource (create, fetch, list with To/From/DateSent
filters and paging, Twilio's JSON shapes, basic auth) so the real ``twilio`` client can
talk to it, sends signed status callbacks after each create (queued → sent → delivered,
or a chosen failure), posts signed "texts from a phone" to the gateway's webhook, keeps
what each phone received, and injects faults (429 with Retry-After, 5xx, slow answers,
the connection dropped after the request arrived, permanent error codes per number).

The wire format is written out here independently of ``gateway.twilio.data`` on purpose:
a simulator that shared the gateway's field names would repeat the gateway's mistakes.

Use it in-process (``async with TwilioSimulator(...).running() as sim``) or as a separate
process through the control API under ``/_sim/`` (see ``_control_routes``). The control
API has no authentication: it is a test tool and listens on 127.0.0.1 by default.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hmac
import itertools
import logging
import re
import secrets
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
import phonenumbers
from aiohttp import web
from twilio.request_validator import RequestValidator

log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
DEFAULT_ACCOUNT_SID = "AC" + "0" * 32
DEFAULT_AUTH_TOKEN = "simulator-token"  # noqa: S105 -- a test tool's well-known default
WHATSAPP = "whatsapp:"
MAX_BODY = 1600
_E164 = re.compile(r"\+[1-9]\d{6,14}")


# --- records -----------------------------------------------------------------------------


@dataclass(slots=True)
class SimMessage:
    """One Message resource as the simulator holds it."""

    sid: str
    account_sid: str
    to: str  # as given, with any whatsapp: prefix
    from_: str
    body: str
    media_urls: tuple[str, ...]
    status: str
    date_created: datetime
    date_updated: datetime
    date_sent: datetime | None = None
    error_code: int | None = None
    error_message: str | None = None
    status_callback: str | None = None
    content_sid: str | None = None
    content_variables: str | None = None

    def to_json(self) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}.json"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": format_datetime(self.date_created, usegmt=True),
            "date_sent": format_datetime(self.date_sent, usegmt=True) if self.date_sent else None,
            "date_updated": format_datetime(self.date_updated, usegmt=True),
            "direction": "outbound-api",
            "error_code": self.error_code,
            "error_message": self.error_message,
            "from": self.from_,
            "messaging_service_sid": None,
            "num_media": str(len(self.media_urls)),
            "num_segments": str(max(1, -(-len(self.body) // 153))),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": self.to,
            "uri": uri,
        }


@dataclass(frozen=True, slots=True)
class ReceivedText:
    """What a phone received (recorded when the simulator accepts a send)."""

    sid: str
    phone: str  # E.164, no prefix
    from_: str  # E.164, no prefix
    channel: str  # "sms" or "whatsapp"
    body: str
    media_urls: tuple[str, ...]
    content_sid: str | None
    content_variables: str | None
    at: datetime

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["from"] = data.pop("from_")
        data["media_urls"] = list(self.media_urls)
        data["at"] = self.at.isoformat()
        return data


@dataclass(frozen=True, slots=True)
class SendAttempt:
    """Every create request, answered or not: ``at`` is the event loop's clock."""

    at: float
    from_: str
    to: str
    outcome: str  # "created", "rejected:<code>", "429", "500", "dropped", ...


@dataclass(frozen=True, slots=True)
class Callback:
    url: str
    form: Mapping[str, str]
    status: int | None  # the receiver's HTTP status; None when it could not be reached


@dataclass(frozen=True, slots=True)
class InboundResult:
    sid: str
    status: int
    body: str


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault for the next ``times`` create requests (every one when ``times`` is None),
    optionally only for sends to phone ``to``. Build with the class methods."""

    kind: str
    to: str | None = None
    times: int | None = 1
    status: int | None = None
    code: int | None = None
    message: str | None = None
    retry_after: float | None = None
    delay: float = 0.0
    create: bool = False  # whether the message still gets created (dropped/slow/garbled)

    KINDS = ("rate_limited", "server_error", "slow", "drop", "garbled", "reject",
             "undelivered", "early_callbacks")

    @classmethod
    def rate_limited(cls, *, retry_after: float | None = 1.0, times: int | None = 1,
                     to: str | None = None) -> Fault:
        return cls("rate_limited", to=to, times=times, status=429, code=20429,
                   retry_after=retry_after)

    @classmethod
    def server_error(cls, *, status: int = 500, times: int | None = 1,
                     to: str | None = None) -> Fault:
        return cls("server_error", to=to, times=times, status=status, code=20500)

    @classmethod
    def slow(cls, delay: float, *, times: int | None = 1, to: str | None = None) -> Fault:
        """Answers after ``delay`` seconds; the message is created then, even when the
        client gave up waiting (as Twilio would)."""
        return cls("slow", to=to, times=times, delay=delay, create=True)

    @classmethod
    def drop(cls, *, create: bool = True, times: int | None = 1,
             to: str | None = None) -> Fault:
        """Closes the connection after the request arrived, without an answer."""
        return cls("drop", to=to, times=times, create=create)

    @classmethod
    def garbled(cls, *, create: bool = True, times: int | None = 1,
                to: str | None = None) -> Fault:
        """Answers 201 with a body that is not JSON."""
        return cls("garbled", to=to, times=times, create=create)

    @classmethod
    def reject(cls, code: int, *, to: str | None = None, times: int | None = None,
               status: int = 400, message: str | None = None) -> Fault:
        """A permanent error such as 21610 (unsubscribed), 21211 (invalid number) or
        63016 (outside the WhatsApp window)."""
        return cls("reject", to=to, times=times, status=status, code=code,
                   message=message or _ERROR_MESSAGES.get(code, "Message refused"))

    @classmethod
    def undelivered(cls, code: int = 30003, *, final: str = "undelivered",
                    to: str | None = None, times: int | None = 1) -> Fault:
        """Accepted, then a status callback with ``final`` (undelivered/failed) and
        ``code``; the phone receives nothing."""
        return cls("undelivered", to=to, times=times, code=code, message=final)

    @classmethod
    def early_callbacks(cls, *, to: str | None = None, times: int | None = 1) -> Fault:
        """Every status callback is sent (and answered) before the create's own answer."""
        return cls("early_callbacks", to=to, times=times)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        kind = data.get("kind")
        if kind not in cls.KINDS:
            raise ValueError(f"kind must be one of {', '.join(cls.KINDS)}")
        allowed = {"to", "times", "status", "code", "message", "retry_after", "delay", "create"}
        unknown = set(data) - allowed - {"kind"}
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        base = {
            "rate_limited": cls.rate_limited(), "server_error": cls.server_error(),
            "slow": cls.slow(1.0), "drop": cls.drop(), "garbled": cls.garbled(),
            "reject": cls.reject(int(data.get("code") or 21211)),
            "undelivered": cls.undelivered(), "early_callbacks": cls.early_callbacks(),
        }[kind]
        return replace(base, **{k: v for k, v in data.items() if k in allowed})

    def matches(self, to: str) -> bool:
        return self.to is None or self.to == _strip(to)


_ERROR_MESSAGES = {
    21211: "Invalid 'To' Phone Number",
    21408: "Permission to send an SMS has not been enabled for the region",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
    30003: "Unreachable destination handset",
    30005: "Unknown destination handset",
    63016: "Failed to send freeform message because you are outside the allowed window. "
           "If you are using WhatsApp, please use a Message Template.",
}


# --- the simulator -------------------------------------------------------------------------


class TwilioSimulator:
    def __init__(
        self, *, account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN, webhook_url: str | None = None,
        callback_delay: float = 0.02, host: str = "127.0.0.1", port: int = 0,
        whatsapp_window: bool = False,
    ) -> None:
        """``whatsapp_window``: free-form WhatsApp sends to a phone that has not written
        to that number (through ``text_from_phone``) in 24 hours are accepted and then
        fail with 63016, as Twilio does; templates (ContentSid) always go."""
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.webhook_url = webhook_url
        self.callback_delay = callback_delay
        self.host = host
        self.port = port
        self.url = ""  # set by running()
        self.messages: dict[str, SimMessage] = {}
        self.attempts: list[SendAttempt] = []
        self.callbacks: list[Callback] = []
        self.whatsapp_window = whatsapp_window
        # (phone, our number) -> when the phone last wrote on WhatsApp
        self.last_whatsapp_inbound: dict[tuple[str, str], datetime] = {}
        self._inboxes: dict[str, list[ReceivedText]] = {}
        self._faults: list[Fault] = []
        self._remaining: dict[int, int | None] = {}  # id(fault) -> uses left
        self._order = itertools.count()
        self._created_order: dict[str, int] = {}
        self._changed: asyncio.Condition | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._validator = RequestValidator(auth_token)

    # -- lifecycle ----------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application()
        base = f"/{API_VERSION}/Accounts/{{account_sid}}/Messages"
        app.router.add_post(base + ".json", self._create)
        app.router.add_get(base + ".json", self._list)
        app.router.add_get(base + "/{sid}.json", self._fetch)
        _control_routes(app, self)
        return app

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[TwilioSimulator]:
        runner = web.AppRunner(self.make_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        server = site._server  # the bound port when port=0
        sockets = getattr(server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else self.port
        self.url = f"http://{self.host}:{port}"
        self._session = aiohttp.ClientSession()
        self._changed = asyncio.Condition()
        try:
            yield self
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._session.close()
            await runner.cleanup()

    # -- Python API ---------------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        self._faults.append(fault)
        self._remaining[id(fault)] = fault.times

    def clear_faults(self) -> None:
        self._faults.clear()
        self._remaining.clear()

    def inbox(self, phone: str) -> list[ReceivedText]:
        return list(self._inboxes.get(_strip(phone), []))

    async def wait_for_inbox(self, phone: str, count: int, within: float) -> list[ReceivedText]:
        """Waits until ``phone`` received at least ``count`` texts or ``within`` seconds
        passed; returns what it has either way."""
        assert self._changed is not None, "use inside running()"
        key = _strip(phone)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(lambda: len(self._inboxes.get(key, [])) >= count)
        return self.inbox(phone)

    async def settle(self, within: float = 5.0) -> None:
        """Waits for every status callback in flight."""
        async with asyncio.timeout(within):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def build_inbound(
        self, from_: str, to: str, body: str = "", *, channel: str = "sms",
        media: Sequence[tuple[str, str]] = (), sid: str | None = None,
    ) -> dict[str, str]:
        """The form Twilio posts for a text from ``from_`` to our number ``to``."""
        prefix = WHATSAPP if channel == "whatsapp" else ""
        sid = sid or _new_sid("MM" if media else "SM")
        form = {
            "ToCountry": _country(to), "FromCountry": _country(from_),
            "SmsMessageSid": sid, "SmsSid": sid, "MessageSid": sid,
            "AccountSid": self.account_sid, "From": prefix + _strip(from_),
            "To": prefix + _strip(to), "Body": body, "NumMedia": str(len(media)),
            "NumSegments": str(max(1, -(-len(body) // 153))), "SmsStatus": "received",
            "ApiVersion": API_VERSION,
        }
        for i, (url, content_type) in enumerate(media):
            form[f"MediaUrl{i}"] = url
            form[f"MediaContentType{i}"] = content_type
        if channel == "whatsapp":
            form.update({"ProfileName": "Sim Phone", "WaId": _strip(from_)[1:],
                         "MessageType": "image" if media else "text"})
        return form

    def signature_for(self, url: str, form: Mapping[str, str]) -> str:
        signature: str = self._validator.compute_signature(url, form)
        return signature

    async def text_from_phone(
        self, from_: str, to: str, body: str = "", *, channel: str = "sms",
        media: Sequence[tuple[str, str]] = (), sid: str | None = None,
        webhook_url: str | None = None, signed: bool = True,
    ) -> InboundResult:
        """Posts a signed inbound webhook, as Twilio does when a phone texts ``to``."""
        url = webhook_url or self.webhook_url
        if not url:
            raise ValueError("no webhook URL: pass webhook_url or configure one")
        form = self.build_inbound(from_, to, body, channel=channel, media=media, sid=sid)
        if channel == "whatsapp":
            self.last_whatsapp_inbound[(_strip(from_), _strip(to))] = datetime.now(UTC)
        headers = {"X-Twilio-Signature": self.signature_for(url, form)} if signed else {}
        async with self._client().post(url, data=form, headers=headers) as response:
            return InboundResult(sid=form["MessageSid"], status=response.status,
                                 body=await response.text())

    # -- REST resource ------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.StreamResponse:
        self._authenticate(request)
        form = await request.post()
        to, from_ = _field(form, "To"), _field(form, "From")
        body, media = _field(form, "Body"), tuple(str(v) for v in form.getall("MediaUrl", []))
        content_sid = _field(form, "ContentSid") or None
        loop = asyncio.get_running_loop()

        def attempt(outcome: str) -> None:
            self.attempts.append(SendAttempt(loop.time(), _strip(from_), _strip(to), outcome))

        problem = _validate(to, from_, body, media, content_sid)
        if problem is not None:
            attempt(f"rejected:{problem[1]}")
            return _error(*problem)
        fault = self._take_fault(to)
        kind = fault.kind if fault else None
        if fault and kind == "reject":
            attempt(f"rejected:{fault.code}")
            return _error(fault.status or 400, fault.code or 21211, fault.message or "")
        if fault and kind == "rate_limited":
            attempt("429")
            headers = {"Retry-After": _seconds(fault.retry_after)} if fault.retry_after else {}
            return _error(429, fault.code or 20429, "Too Many Requests", headers=headers)
        if fault and kind == "server_error":
            attempt(str(fault.status))
            return _error(fault.status or 500, fault.code or 20500, "Internal Server Error")
        if fault and kind == "slow":
            await asyncio.sleep(fault.delay)
        if fault and kind in ("drop", "garbled") and not fault.create:
            attempt(kind)
            return self._drop(request) if kind == "drop" else _garbled()
        message = self._store(request, form, to=to, from_=from_, body=body, media=media,
                              content_sid=content_sid)
        failure = fault if fault and kind == "undelivered" else None
        if failure is None and self._outside_window(to, from_, content_sid):
            failure = Fault.undelivered(63016, final="failed")
        if failure is None:
            await self._deliver_to_phone(message)
        attempt(kind or "created")
        callbacks = self._callbacks(message, failure)
        if fault and kind == "early_callbacks":
            await callbacks
        else:
            self._spawn(callbacks)
        if kind == "drop":
            return self._drop(request)
        if kind == "garbled":
            return _garbled()
        return web.json_response(message.to_json(), status=201)

    async def _fetch(self, request: web.Request) -> web.Response:
        self._authenticate(request)
        message = self.messages.get(request.match_info["sid"])
        if message is None or message.account_sid != self.account_sid:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        return web.json_response(message.to_json())

    async def _list(self, request: web.Request) -> web.Response:
        self._authenticate(request)
        query = request.query
        try:
            page_size = min(max(int(query.get("PageSize", "50")), 1), 1000)
            page = max(int(query.get("Page", "0")), 0)
            offset = int(query.get("PageToken", "PA0")[2:] or 0) if "PageToken" in query else 0
            selected = [m for m in self._newest_first() if _listed(m, query)]
        except ValueError as exc:
            return _error(400, 20001, f"Invalid list parameter: {exc}")
        chunk = selected[offset:offset + page_size]
        path = request.path
        keep = [(k, v) for k, v in query.items() if k not in ("Page", "PageToken", "PageSize")]

        def page_uri(number: int, token_offset: int | None) -> str:
            params = [*keep, ("PageSize", str(page_size)), ("Page", str(number))]
            if token_offset is not None:
                params.append(("PageToken", f"PA{token_offset}"))
            return f"{path}?{urlencode(params)}"

        has_next = offset + page_size < len(selected)
        return web.json_response({
            "messages": [m.to_json() for m in chunk],
            "end": offset + len(chunk) - 1 if chunk else offset,
            "first_page_uri": page_uri(0, None),
            "next_page_uri": page_uri(page + 1, offset + page_size) if has_next else None,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": (page_uri(page - 1, max(offset - page_size, 0))
                                  if page > 0 else None),
            "start": offset,
            "uri": f"{path}?{request.query_string}" if request.query_string else path,
        })

    # -- internals ----------------------------------------------------------------------------

    def _authenticate(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        user, _, password = _basic(header)
        valid = (hmac.compare_digest(user, self.account_sid)
                 and hmac.compare_digest(password, self.auth_token)
                 and request.match_info["account_sid"] == self.account_sid)
        if not valid:
            raise _unauthorized()

    def _outside_window(self, to: str, from_: str, content_sid: str | None) -> bool:
        if not self.whatsapp_window or content_sid or not to.startswith(WHATSAPP):
            return False
        last = self.last_whatsapp_inbound.get((_strip(to), _strip(from_)))
        return last is None or datetime.now(UTC) - last > timedelta(hours=24)

    def _take_fault(self, to: str) -> Fault | None:
        for fault in self._faults:
            if not fault.matches(to):
                continue
            left = self._remaining.get(id(fault))
            if left is not None:
                if left <= 1:
                    self._faults.remove(fault)
                    self._remaining.pop(id(fault), None)
                else:
                    self._remaining[id(fault)] = left - 1
            return fault
        return None

    def _store(self, request: web.Request, form: Mapping[str, Any], *, to: str, from_: str,
               body: str, media: tuple[str, ...], content_sid: str | None) -> SimMessage:
        now = datetime.now(UTC)
        message = SimMessage(
            sid=_new_sid("MM" if media else "SM"), account_sid=self.account_sid, to=to,
            from_=from_, body=body, media_urls=media, status="queued", date_created=now,
            date_updated=now, status_callback=_field(form, "StatusCallback") or None,
            content_sid=content_sid, content_variables=_field(form, "ContentVariables") or None,
        )
        self.messages[message.sid] = message
        self._created_order[message.sid] = next(self._order)
        return message

    async def _deliver_to_phone(self, message: SimMessage) -> None:
        received = ReceivedText(
            sid=message.sid, phone=_strip(message.to), from_=_strip(message.from_),
            channel="whatsapp" if message.to.startswith(WHATSAPP) else "sms",
            body=message.body, media_urls=message.media_urls,
            content_sid=message.content_sid, content_variables=message.content_variables,
            at=message.date_created)
        self._inboxes.setdefault(received.phone, []).append(received)
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def _callbacks(self, message: SimMessage, failure: Fault | None) -> None:
        steps: list[tuple[str, int | None]]
        if failure is None:
            steps = [("queued", None), ("sent", None), ("delivered", None)]
        elif failure.message == "failed":
            steps = [("queued", None), ("failed", failure.code)]
        else:
            steps = [("queued", None), ("sent", None), ("undelivered", failure.code)]
        for status, code in steps:
            if status != "queued":
                await asyncio.sleep(self.callback_delay)
            now = datetime.now(UTC)
            message.status, message.date_updated = status, now
            if status == "sent":
                message.date_sent = now
            if code is not None:
                message.error_code = code
                message.error_message = _ERROR_MESSAGES.get(code)
            if message.status_callback:
                await self._post_callback(message, status, code)

    async def _post_callback(self, message: SimMessage, status: str, code: int | None) -> None:
        url = message.status_callback
        assert url
        form = {"SmsSid": message.sid, "SmsStatus": status, "MessageStatus": status,
                "To": message.to, "From": message.from_, "MessageSid": message.sid,
                "AccountSid": message.account_sid, "ApiVersion": API_VERSION}
        if code is not None:
            form["ErrorCode"] = str(code)
        if message.to.startswith(WHATSAPP):
            form["ChannelPrefix"] = "whatsapp"
        headers = {"X-Twilio-Signature": self.signature_for(url, form)}
        answered: int | None = None
        try:
            async with self._client().post(url, data=form, headers=headers) as response:
                answered = response.status
        except (aiohttp.ClientError, OSError) as exc:
            log.info("status callback to %s failed: %s", url, exc.__class__.__name__)
        self.callbacks.append(Callback(url=url, form=form, status=answered))

    def _drop(self, request: web.Request) -> web.Response:
        transport = request.transport
        if transport is not None:
            transport.abort()  # the request arrived; the answer never will
        return web.Response(status=500)  # never reaches the client

    def _client(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use inside running()"
        return self._session

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _newest_first(self) -> list[SimMessage]:
        return sorted(self.messages.values(),
                      key=lambda m: (m.date_created, self._created_order[m.sid]), reverse=True)


# --- wire helpers --------------------------------------------------------------------------


def _validate(to: str, from_: str, body: str, media: tuple[str, ...],
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
    if not _E164.fullmatch(_strip(to)):
        return 400, 21211, f"Invalid 'To' Phone Number: {to}"
    if not _E164.fullmatch(_strip(from_)):
        return 400, 21212, f"Invalid 'From' Phone Number: {from_}"
    return None


def _listed(message: SimMessage, query: Mapping[str, str]) -> bool:
    if "To" in query and message.to != query["To"]:
        return False
    if "From" in query and message.from_ != query["From"]:
        return False
    for key in ("DateSent", "DateSent<", "DateSent>"):
        if key not in query:
            continue
        if message.date_sent is None:
            return False
        if not _date_matches(message.date_sent, key[-1] if key != "DateSent" else "=",
                             query[key]):
            return False
    return True


def _date_matches(sent: datetime, op: str, raw: str) -> bool:
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


def _error(status: int, code: int, message: str, *,
           headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
         "status": status}, status=status, headers=headers)


def _unauthorized() -> web.HTTPUnauthorized:
    body = _error(401, 20003, "Authenticate").text
    return web.HTTPUnauthorized(text=body, content_type="application/json",
                                headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})


def _garbled() -> web.Response:
    return web.Response(status=201, text="<html>upstream error</html>", content_type="text/html")


def _basic(header: str) -> tuple[str, str, str]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return "", "", ""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("latin1")
    except (binascii.Error, ValueError):
        return "", "", ""
    return decoded.partition(":")


def _field(form: Mapping[str, Any], key: str) -> str:
    value = form.get(key, "")
    return value if isinstance(value, str) else ""


def _strip(address: str) -> str:
    address = address.strip()
    if address.startswith(WHATSAPP):
        address = address[len(WHATSAPP):]
    if address and address[0] != "+" and address.isdigit():
        address = "+" + address  # a "+" that a query string turned into a space
    return address


def _country(phone: str) -> str:
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(_strip(phone), None))
    except phonenumbers.NumberParseException:
        return ""
    return str(region or "")


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# --- control API ---------------------------------------------------------------------------


def _control_routes(app: web.Application, sim: TwilioSimulator) -> None:
    """``POST /_sim/texts`` {from, to, body, channel?, media?: [{url, content_type}]} sends
    a text from a phone; ``GET /_sim/inbox?phone=%2B1…&count=N&timeout=S`` reads (and
    waits for) a phone's inbox; ``POST /_sim/faults`` {kind, …} injects a fault and
    ``DELETE /_sim/faults`` clears them; ``GET /_sim/messages`` and ``GET /_sim/attempts``
    list what was created and every create request."""

    async def texts(request: web.Request) -> web.Response:
        data = await request.json()
        try:
            media = [(m["url"], m.get("content_type", "image/jpeg")) for m in data.get("media", [])]
            result = await sim.text_from_phone(
                str(data["from"]), str(data["to"]), str(data.get("body", "")),
                channel=str(data.get("channel", "sms")), media=media,
                webhook_url=data.get("webhook_url"), signed=bool(data.get("signed", True)))
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        except aiohttp.ClientError as exc:
            return web.json_response({"error": f"webhook unreachable: {exc}"}, status=502)
        return web.json_response({"sid": result.sid, "status": result.status,
                                  "body": result.body})

    async def inbox(request: web.Request) -> web.Response:
        phone = request.query.get("phone", "")
        if not phone:
            return web.json_response({"error": "phone is required"}, status=400)
        try:
            count = int(request.query.get("count", "0"))
            timeout = min(float(request.query.get("timeout", "0")), 60.0)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        received = (await sim.wait_for_inbox(phone, count, timeout) if count
                    else sim.inbox(phone))
        return web.json_response({"phone": _strip(phone), "complete": len(received) >= count,
                                  "messages": [r.to_json() for r in received]})

    async def add_fault(request: web.Request) -> web.Response:
        try:
            fault = Fault.from_json(await request.json())
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        sim.inject(fault)
        return web.json_response(asdict(fault), status=201)

    async def clear_faults(request: web.Request) -> web.Response:
        sim.clear_faults()
        return web.Response(status=204)

    async def messages(request: web.Request) -> web.Response:
        return web.json_response([m.to_json() for m in sim._newest_first()])

    async def attempts(request: web.Request) -> web.Response:
        return web.json_response([{"at": a.at, "from": a.from_, "to": a.to,
                                   "outcome": a.outcome} for a in sim.attempts])

    app.router.add_post("/_sim/texts", texts)
    app.router.add_get("/_sim/inbox", inbox)
    app.router.add_post("/_sim/faults", add_fault)
    app.router.add_delete("/_sim/faults", clear_faults)
    app.router.add_get("/_sim/messages", messages)
    app.router.add_get("/_sim/attempts", attempts)


# --- command line --------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """``gateway twilio-sim``: serves until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sim = TwilioSimulator(account_sid=args.account_sid, auth_token=args.auth_token,
                          webhook_url=args.webhook_url, host=args.host, port=args.port)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with sim.running():
            print(f"twilio simulator listening on {sim.url}", flush=True)
            await stop.wait()

    asyncio.run(serve())
    return 0
