"""Event streams: async iterators over ``GET /v1/events`` that also call back, in the
manner of XMTP's stream options (``on_value``, ``on_error``, ``on_fail``, ``on_restart``,
``on_retry``, ``retry_on_fail``, ``retry_attempts``, ``retry_delay``).

A dropped connection (the gateway restarting, a network blip, a silent peer) is retried;
each reconnect sends the last event id seen as ``Last-Event-ID``, and the server resumes
strictly after it, so no event is missed or repeated. The stream learns its position
from the server's first frame, so even a reconnect before any event resumes correctly.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiohttp

from gateway.client.http import Http, error_of
from gateway.client.resources import Event, Message
from gateway.client.sse import read_sse
from gateway.errors import GatewayError

log = logging.getLogger(__name__)

T = TypeVar("T")

Callback = Callable[..., Any]


class StreamFailed(GatewayError):
    """The stream gave up: retries were off or used up, or the API refused it."""

    code = "stream_failed"


@dataclass(frozen=True, slots=True)
class StreamOptions:
    on_value: Callback | None = None
    on_error: Callback | None = None  # called with each exception
    on_fail: Callback | None = None  # called once when the stream gives up
    on_restart: Callback | None = None  # called after a successful reconnect
    on_retry: Callback | None = None  # called with (attempt, retry_attempts) before each
    retry_on_fail: bool = True
    retry_attempts: int = 6
    retry_delay: float = 1.0  # seconds between attempts
    after: int | None = None  # start after this event id (0: the whole log); None: now
    idle_timeout: float = 60.0  # no byte (not even a keep-alive) for this long: reconnect


class _Unrecoverable(Exception):
    pass


_END = object()


class EventStream(Generic[T]):
    """Use as ``async for value in stream`` or with callbacks alone (it runs on its own
    once started); ``await stream.close()`` or ``async with`` ends it."""

    def __init__(self, http: Http, *, params: dict[str, str], options: StreamOptions,
                 convert: Callable[[Event], T | None]) -> None:
        self._http = http
        self._params = params
        self._options = options
        self._convert = convert
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.last_event_id: int | None = options.after
        self.connected = asyncio.Event()

    def start(self) -> EventStream[T]:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gateway-client-stream")
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._queue.put_nowait(_END)

    async def __aenter__(self) -> EventStream[T]:
        return self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[T]:
        self.start()
        return self

    async def __anext__(self) -> T:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # later calls end too
            raise StopAsyncIteration
        if isinstance(item, StreamFailed):
            self._queue.put_nowait(_END)
            raise item
        value: T = item
        return value

    # ---- the connection loop ----------------------------------------------------------

    async def _run(self) -> None:
        options = self._options
        attempt = 0
        dropped = False
        while True:
            try:
                async for value in self._connect():
                    if dropped:
                        dropped = False
                        attempt = 0
                        await _call(options.on_restart)
                    if value is not None:
                        await _call(options.on_value, value)
                        self._queue.put_nowait(value)
                raise ConnectionResetError("the event stream ended")
            except asyncio.CancelledError:
                raise
            except _Unrecoverable as exc:
                await self._fail(exc.__cause__ or exc)
                return
            except (aiohttp.ClientError, ConnectionError, TimeoutError, ValueError) as exc:
                self.connected.clear()
                await _call(options.on_error, exc)
                if not options.retry_on_fail or attempt >= options.retry_attempts:
                    await self._fail(exc)
                    return
                attempt += 1
                dropped = True
                await _call(options.on_retry, attempt, options.retry_attempts)
                await asyncio.sleep(options.retry_delay)

    async def _fail(self, exc: BaseException) -> None:
        await _call(self._options.on_fail)
        failed = StreamFailed(f"event stream failed: {exc}")
        failed.__cause__ = exc
        self._queue.put_nowait(failed)

    async def _connect(self) -> AsyncIterator[T | None]:
        """Yields converted values (None for events filtered out, and once on connect so
        the caller learns the connection is back)."""
        headers = dict(self._http.headers)
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = str(self.last_event_id)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10,
                                        sock_read=self._options.idle_timeout)
        async with self._http.session.get(self._http.url("/v1/events"), params=self._params,
                                          headers=headers, timeout=timeout) as resp:
            if resp.status != 200:
                error = await error_of(resp)
                if resp.status >= 500:
                    raise aiohttp.ClientResponseError(
                        resp.request_info, (), status=resp.status, message=str(error))
                await _call(self._options.on_error, error)
                raise _Unrecoverable() from error
            self.connected.set()
            yield None
            async for raw in read_sse(resp.content):
                if raw.id is not None and raw.id.isdigit():
                    event_id = int(raw.id)
                    if self.last_event_id is not None and event_id <= self.last_event_id:
                        continue  # already delivered before a reconnect
                    self.last_event_id = event_id
                if raw.data is None:
                    continue
                yield self._convert(Event.from_json(json.loads(raw.data)))


async def _call(callback: Callback | None, *args: Any) -> None:
    if callback is None:
        return
    result = callback(*args)
    if inspect.isawaitable(result):
        await result


ConsentArg = str | Iterable[str] | None
"""A consent filter: "allowed", "unknown", "denied", or several of them."""


def consent_param(consent: ConsentArg) -> str | None:
    if consent is None:
        return None
    return consent if isinstance(consent, str) else ",".join(consent)


def stream_params(*, conversation_id: str | None = None,
                  types: tuple[str, ...] | None = None,
                  consent: ConsentArg = None) -> dict[str, str]:
    params = {}
    if conversation_id is not None:
        params["conversation_id"] = conversation_id
    if types:
        params["types"] = ",".join(types)
    consent_value = consent_param(consent)
    if consent_value is not None:
        params["consent"] = consent_value
    return params


def event_stream(http: Http, *, conversation_id: str | None = None,
                 types: tuple[str, ...] | None = None, consent: ConsentArg = None,
                 options: StreamOptions) -> EventStream[Event]:
    return EventStream(http, params=stream_params(conversation_id=conversation_id,
                                                  types=types, consent=consent),
                       options=options, convert=lambda event: event)


def message_stream(http: Http, *, conversation_id: str | None = None,
                   consent: ConsentArg = None, options: StreamOptions) -> EventStream[Message]:
    def convert(event: Event) -> Message | None:
        body = event.data.get("message")
        return Message.from_json(body) if isinstance(body, dict) else None

    return EventStream(http, params=stream_params(conversation_id=conversation_id,
                                                  types=("message.added",), consent=consent),
                       options=options, convert=convert)

