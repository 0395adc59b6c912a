"""The HTTP client under the twilio library, fixed where twilio-python 9.13 falls short
(each point seen against a stand-in of Twilio's Messages API):

* a real timeout per request (the library's ``timeout`` never reaches aiohttp), with a
  separate connect timeout so "could not connect" stays distinguishable from "sent, no
  answer";
* every response recorded per request in a context variable, because
  ``TwilioRestException`` drops the headers (``Retry-After``) and the library's
  ``_test_only_last_response`` is shared between concurrent sends;
* ``https://*.twilio.com`` rewritten to a configured base URL (the simulator), which
  covers every domain and every next-page link, unlike ``client.api.base_url``.

Build it inside the running event loop: its ``ClientSession`` is created in ``__init__``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import aiohttp
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from yarl import URL

_TWILIO_DOMAIN = "twilio.com"


@dataclass(slots=True)
class Exchange:
    """What one ``request()`` call saw; ``response`` stays None when it raised."""

    method: str
    url: str
    response: Response | None = None


@dataclass(slots=True)
class Recording:
    exchanges: list[Exchange] = field(default_factory=list)

    @property
    def last_response(self) -> Response | None:
        return self.exchanges[-1].response if self.exchanges else None


_recording: contextvars.ContextVar[Recording | None] = contextvars.ContextVar(
    "twilio_http_recording", default=None)


@contextmanager
def recording() -> Iterator[Recording]:
    """Records the HTTP exchanges made by this task inside the block. Each asyncio task
    has its own context, so concurrent sends never see each other's responses."""
    rec = Recording()
    token = _recording.set(rec)
    try:
        yield rec
    finally:
        _recording.reset(token)


class GatewayHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # untyped base
    def __init__(self, *, timeout: float, connect_timeout: float | None = None,
                 base_url: str | None = None) -> None:
        super().__init__(pool_connections=True, timeout=timeout)
        self._connect_timeout = connect_timeout if connect_timeout is not None else timeout
        self._base_url = URL(base_url) if base_url else None

    def rewrite(self, url: str) -> str:
        """``https://<anything>.twilio.com/path?query`` -> the base URL with the same path
        and query; any other URL is left alone."""
        if self._base_url is None:
            return url
        parsed = URL(url)
        host = parsed.host or ""
        if parsed.scheme != "https" or not (
                host == _TWILIO_DOMAIN or host.endswith("." + _TWILIO_DOMAIN)):
            return url
        base_path = self._base_url.raw_path.rstrip("/")
        rewritten = str(self._base_url.with_path(base_path + parsed.raw_path, encoded=True))
        query = parsed.raw_query_string  # kept byte for byte (signed page tokens, "+")
        return f"{rewritten}?{query}" if query else rewritten

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the library passes it by name
        allow_redirects: bool = False,
    ) -> Response:
        total = timeout if timeout is not None else self.timeout
        send_headers = dict(headers or {})
        if auth is not None:
            # aiohttp 3.14 deprecates BasicAuth objects; the header is the same thing.
            send_headers["Authorization"] = aiohttp.encode_basic_auth(auth[0], auth[1])
        exchange = Exchange(method=method.upper(), url=self.rewrite(url))
        rec = _recording.get()
        if rec is not None:
            rec.exchanges.append(exchange)
        # The library's log_request/log_response are left out on purpose: they log query
        # parameters (To/From phone numbers of a list call) in the clear at INFO.
        async with self.session.request(
            exchange.method, exchange.url, params=params, data=data, headers=send_headers,
            allow_redirects=allow_redirects,
            timeout=aiohttp.ClientTimeout(total=total, connect=self._connect_timeout),
        ) as raw:
            text = await raw.text()
            exchange.response = Response(raw.status, text, raw.headers)
        return exchange.response
