"""A Twilio stand-in for offline development and tests: shipped code, also runnable as
``gateway twilio-sim``.

It serves Twilio's Messages REST resource (create, fetch, list with To/From/DateSent
filters and paging, Twilio's JSON shapes, basic auth) so the real ``twilio`` client can
talk to it, sends signed status callbacks after each create (queued → sent → delivered,
or a chosen failure), posts signed "texts from a phone" to the gateway's webhook, keeps
what each phone received, and injects faults (429 with Retry-After, 5xx, slow answers,
the connection dropped after the request arrived, permanent error codes per number).

Use it in-process (``async with TwilioSimulator(...).running() as sim``) or as a separate
process through the control API under ``/_sim/`` (see ``control.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from gateway.testing.twilio_sim.control import control_routes
from gateway.testing.twilio_sim.faults import Fault
from gateway.testing.twilio_sim.media import (
    MEDIA_ERRORS,
    MediaHost,
    SimMedia,
    validate_media_urls,
)
from gateway.testing.twilio_sim.records import (
    Callback,
    InboundResult,
    ReceivedText,
    SendAttempt,
    SimMessage,
)
from gateway.testing.twilio_sim.wire import (
    API_VERSION,
    ERROR_MESSAGES,
    WHATSAPP,
    basic_credentials,
    country_of,
    error_response,
    garbled,
    listed,
    new_sid,
    seconds_header,
    strip_channel,
    text_field,
    unauthorized,
    validate_create,
)

log = logging.getLogger(__name__)

DEFAULT_ACCOUNT_SID = "AC" + "0" * 32
DEFAULT_AUTH_TOKEN = "simulator-token"  # noqa: S105 -- a test tool's well-known default
CONTROL_MAX_BYTES = 16 * 1024 * 1024  # a control request (a phone's files in base64)


class TwilioSimulator:
    def __init__(
        self, *, account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN, webhook_url: str | None = None,
        callback_delay: float = 0.02, host: str = "127.0.0.1", port: int = 0,
        whatsapp_window: bool = False, media_auth: bool = True,
    ) -> None:
        """``whatsapp_window``: free-form WhatsApp sends to a phone that has not written
        to that number (through ``text_from_phone``) in 24 hours are accepted and then
        fail with 63016, as Twilio does; templates (ContentSid) always go.
        ``media_auth``: media a phone sent is served only with the account's basic-auth
        credentials (Twilio's "Enforce HTTP Auth on Media URLs", now always on)."""
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
        self.create_arrived = asyncio.Event()  # set when a create request has been read
        self.whatsapp_window = whatsapp_window
        # (phone, our number) -> when the phone last wrote on WhatsApp
        self.last_whatsapp_inbound: dict[tuple[str, str], datetime] = {}
        self._inboxes: dict[str, list[ReceivedText]] = {}
        self._faults: list[list[Any]] = []  # [fault, uses left or None for always]
        self._order = itertools.count()
        self._created_order: dict[str, int] = {}
        self._changed: asyncio.Condition | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._validator = RequestValidator(auth_token)
        self.media = MediaHost(account_sid, require_auth=media_auth,
                               authenticate=self._authenticate)

    # -- lifecycle ----------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        # the control API takes a phone's files as base64: Twilio's 5 MB and then some
        app = web.Application(client_max_size=CONTROL_MAX_BYTES)
        base = f"/{API_VERSION}/Accounts/{{account_sid}}/Messages"
        app.router.add_post(base + ".json", self._create)
        app.router.add_get(base + ".json", self._list)
        app.router.add_get(base + "/{sid}.json", self._fetch)
        self.media.add_routes(app, base)
        control_routes(app, self)
        return app

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[TwilioSimulator]:
        runner = web.AppRunner(self.make_app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        port = runner.addresses[0][1]  # the bound port when port=0
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
        self._faults.append([fault, fault.times])

    def clear_faults(self) -> None:
        self._faults.clear()

    def inbox(self, phone: str) -> list[ReceivedText]:
        return list(self._inboxes.get(strip_channel(phone), []))

    async def wait_for_inbox(self, phone: str, count: int, within: float) -> list[ReceivedText]:
        """Waits until ``phone`` received at least ``count`` texts or ``within`` seconds
        passed; returns what it has either way."""
        assert self._changed is not None, "use inside running()"
        key = strip_channel(phone)
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
        sid = sid or new_sid("MM" if media else "SM")
        form = {
            "ToCountry": country_of(to), "FromCountry": country_of(from_),
            "SmsMessageSid": sid, "SmsSid": sid, "MessageSid": sid,
            "AccountSid": self.account_sid, "From": prefix + strip_channel(from_),
            "To": prefix + strip_channel(to), "Body": body, "NumMedia": str(len(media)),
            "NumSegments": str(max(1, -(-len(body) // 153))), "SmsStatus": "received",
            "ApiVersion": API_VERSION,
        }
        for i, (url, content_type) in enumerate(media):
            form[f"MediaUrl{i}"] = url
            form[f"MediaContentType{i}"] = content_type
        if channel == "whatsapp":
            form.update({"ProfileName": "Sim Phone", "WaId": strip_channel(from_)[1:],
                         "MessageType": "image" if media else "text"})
        return form

    def signature_for(self, url: str, form: Mapping[str, str]) -> str:
        signature: str = self._validator.compute_signature(url, form)
        return signature

    async def text_from_phone(
        self, from_: str, to: str, body: str = "", *, channel: str = "sms",
        media: Sequence[tuple[str, str]] = (), sid: str | None = None,
        webhook_url: str | None = None, signed: bool = True,
        attachments: Sequence[tuple[bytes, str]] = (),
    ) -> InboundResult:
        """Posts a signed inbound webhook, as Twilio does when a phone texts ``to``.
        ``media``: (URL, content type) pairs given as they are; ``attachments``: (bytes,
        content type) pairs the simulator hosts as the message's Media (MediaUrl{N}
        then points here)."""
        url = webhook_url or self.webhook_url
        if not url:
            raise ValueError("no webhook URL: pass webhook_url or configure one")
        sid = sid or new_sid("MM" if media or attachments else "SM")
        hosted = [self.media.host(sid, data, kind) for data, kind in attachments]
        media = [*media, *((self.url + m.uri, m.content_type) for m in hosted)]
        form = self.build_inbound(from_, to, body, channel=channel, media=media, sid=sid)
        if channel == "whatsapp":
            key = (strip_channel(from_), strip_channel(to))
            self.last_whatsapp_inbound[key] = datetime.now(UTC)
        headers = {"X-Twilio-Signature": self.signature_for(url, form)} if signed else {}
        async with self._client().post(url, data=form, headers=headers) as response:
            return InboundResult(sid=form["MessageSid"], status=response.status,
                                 body=await response.text())

    # -- REST resource ------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.StreamResponse:
        self._authenticate(request)
        form = await request.post()
        self.create_arrived.set()
        to, from_ = text_field(form, "To"), text_field(form, "From")
        body, media = text_field(form, "Body"), tuple(str(v) for v in form.getall("MediaUrl", []))
        content_sid = text_field(form, "ContentSid") or None
        loop = asyncio.get_running_loop()

        def attempt(outcome: str) -> None:
            self.attempts.append(SendAttempt(loop.time(), strip_channel(from_),
                                             strip_channel(to), outcome))

        problem = validate_create(to, from_, body, media, content_sid) or validate_media_urls(
            media)
        if problem is not None:
            attempt(f"rejected:{problem[1]}")
            return error_response(*problem)
        fault = self._take_fault(to)
        kind = fault.kind if fault else None
        if fault and kind == "reject":
            attempt(f"rejected:{fault.code}")
            return error_response(fault.status or 400, fault.code or 21211, fault.message or "")
        if fault and kind == "rate_limited":
            attempt("429")
            headers = ({"Retry-After": seconds_header(fault.retry_after)}
                       if fault.retry_after else {})
            return error_response(429, fault.code or 20429, "Too Many Requests", headers=headers)
        if fault and kind == "server_error":
            attempt(str(fault.status))
            return error_response(fault.status or 500, fault.code or 20500, "Internal Server Error")
        if fault and kind == "slow":
            await asyncio.sleep(fault.delay)
        if fault and kind in ("drop", "garbled") and not fault.create:
            attempt(kind)
            return self._drop(request) if kind == "drop" else garbled()
        message = self._store(request, form, to=to, from_=from_, body=body, media=media,
                              content_sid=content_sid)
        failure = fault if fault and kind == "undelivered" else None
        if failure is None and self._outside_window(to, from_, content_sid):
            failure = Fault.undelivered(63016, final="failed")
        if failure is None and not media:  # with media: once it is fetched (_callbacks)
            await self._deliver_to_phone(message)
        attempt(kind or "created")
        callbacks = self._callbacks(message, failure, reordered=kind == "reordered_callbacks")
        if fault and (kind == "early_callbacks" or fault.early):
            await callbacks
        else:
            self._spawn(callbacks)
        if kind == "drop":
            return self._drop(request)
        if kind == "garbled":
            return garbled()
        return web.json_response(message.to_json(), status=201)

    async def _fetch(self, request: web.Request) -> web.Response:
        self._authenticate(request)
        message = self.messages.get(request.match_info["sid"])
        if message is None or message.account_sid != self.account_sid:
            return error_response(404, 20404,
                                  f"The requested resource {request.path} was not found")
        return web.json_response(message.to_json())

    async def _list(self, request: web.Request) -> web.Response:
        self._authenticate(request)
        query = request.query
        try:
            page_size = min(max(int(query.get("PageSize", "50")), 1), 1000)
            page = max(int(query.get("Page", "0")), 0)
            offset = int(query.get("PageToken", "PA0")[2:] or 0) if "PageToken" in query else 0
            selected = [m for m in self.newest_first() if listed(m, query)]
        except ValueError as exc:
            return error_response(400, 20001, f"Invalid list parameter: {exc}")
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
        user, _, password = basic_credentials(header)
        valid = (hmac.compare_digest(user, self.account_sid)
                 and hmac.compare_digest(password, self.auth_token)
                 and request.match_info["account_sid"] == self.account_sid)
        if not valid:
            raise unauthorized()

    def _outside_window(self, to: str, from_: str, content_sid: str | None) -> bool:
        if not self.whatsapp_window or content_sid or not to.startswith(WHATSAPP):
            return False
        last = self.last_whatsapp_inbound.get((strip_channel(to), strip_channel(from_)))
        return last is None or datetime.now(UTC) - last > timedelta(hours=24)

    def _take_fault(self, to: str) -> Fault | None:
        for armed in self._faults:
            fault: Fault = armed[0]
            if not fault.matches(to):
                continue
            if armed[1] is not None:
                armed[1] -= 1
                if armed[1] <= 0:
                    self._faults.remove(armed)
            return fault
        return None

    def _store(self, request: web.Request, form: Mapping[str, Any], *, to: str, from_: str,
               body: str, media: tuple[str, ...], content_sid: str | None) -> SimMessage:
        now = datetime.now(UTC)
        message = SimMessage(
            sid=new_sid("MM" if media else "SM"), account_sid=self.account_sid, to=to,
            from_=from_, body=body, media_urls=media, status="queued", date_created=now,
            date_updated=now, status_callback=text_field(form, "StatusCallback") or None,
            content_sid=content_sid, content_variables=text_field(form, "ContentVariables") or None,
        )
        self.messages[message.sid] = message
        self._created_order[message.sid] = next(self._order)
        return message

    async def _deliver_to_phone(self, message: SimMessage,
                                media: tuple[SimMedia, ...] = ()) -> None:
        received = ReceivedText(
            sid=message.sid, phone=strip_channel(message.to), from_=strip_channel(message.from_),
            channel="whatsapp" if message.to.startswith(WHATSAPP) else "sms",
            body=message.body, media_urls=message.media_urls,
            content_sid=message.content_sid, content_variables=message.content_variables,
            at=message.date_created, media=media)
        self._inboxes.setdefault(received.phone, []).append(received)
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def _callbacks(self, message: SimMessage, failure: Fault | None, *,
                         reordered: bool = False) -> None:
        """Moves the message through its statuses, posting a callback for each; when
        ``reordered``, the message moves as usual but the callbacks go out last first.
        A message with media is first fetched, as Twilio does before sending it; one
        that cannot be fetched fails with Twilio's code (11200, 12300, 30019)."""
        if failure is None and message.media_urls:
            code = await self.media.fetch_for_send(self._client(), message.sid,
                                                   message.media_urls)
            if code is not None:
                failure = Fault.undelivered(code, final="failed")
            else:
                await self._deliver_to_phone(message, tuple(self.media.of(message.sid)))
        steps: list[tuple[str, int | None]]
        if failure is None:
            steps = [("queued", None), ("sent", None), ("delivered", None)]
        elif failure.message == "failed":
            steps = [("queued", None), ("failed", failure.code)]
        else:
            steps = [("queued", None), ("sent", None), ("undelivered", failure.code)]
        if reordered:
            for status, code in steps:
                self._advance(message, status, code)
            steps.reverse()
        for i, (status, code) in enumerate(steps):
            if i:
                await asyncio.sleep(self.callback_delay)
            if not reordered:
                self._advance(message, status, code)
            if message.status_callback:
                await self._post_callback(message, status, code)

    def _advance(self, message: SimMessage, status: str, code: int | None) -> None:
        now = datetime.now(UTC)
        message.status, message.date_updated = status, now
        if status == "sent":
            message.date_sent = now
        if code is not None:
            message.error_code = code
            message.error_message = ERROR_MESSAGES.get(code) or MEDIA_ERRORS.get(code)

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

    def newest_first(self) -> list[SimMessage]:
        return sorted(self.messages.values(),
                      key=lambda m: (m.date_created, self._created_order[m.sid]), reverse=True)
