"""The async client of the gateway's Conversations API.

    async with GatewayClient("http://127.0.0.1:8080", token) as client:
        conversation = await client.conversations.create(friendly_name="Support")
        await conversation.add_participant("0xAb58…")
        await conversation.add_participant(address="+14155550123", proxy_address="+1415…")
        await conversation.send("hello")
        async for message in client.stream_messages(on_error=print):
            ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from gateway.client.http import Http, query
from gateway.client.paging import Paginator
from gateway.client.resources import Conversation, Event, Message, TimeArg, _since
from gateway.client.stream import (
    ConsentArg,
    EventStream,
    StreamOptions,
    consent_param,
    event_stream,
    message_stream,
    stream_params,
)


class Conversations:
    def __init__(self, http: Http) -> None:
        self._http = http

    async def create(self, *, friendly_name: str | None = None, unique_name: str | None = None,
                     attributes: Mapping[str, Any] | None = None) -> Conversation:
        body = await self._http.request("POST", "/v1/conversations", json={
            "friendly_name": friendly_name, "unique_name": unique_name,
            "attributes": dict(attributes or {})})
        return Conversation.from_json(body, self._http)

    async def get(self, ref: str) -> Conversation:
        """By id (CH…) or unique name (any characters: it is escaped into the path)."""
        body = await self._http.request("GET", f"/v1/conversations/{quote(ref, safe='')}")
        return Conversation.from_json(body, self._http)

    def list(self, *, state: str | None = None, consent: ConsentArg = None,
             page_size: int = 50, limit: int | None = None) -> Paginator[Conversation]:
        """``consent`` ("allowed", "unknown", "denied", or several): only conversations
        with an active participant whose consent is one of them (XMTP's
        ``consentStates``)."""
        async def fetch(params: Mapping[str, str]) -> Any:
            return await self._http.request("GET", "/v1/conversations", params=params)

        return Paginator(fetch, query(state=state, consent=consent_param(consent),
                                      page_size=page_size),
                         lambda body: Conversation.from_json(body, self._http),
                         size_name="page_size", limit=limit)

    def stream(self, **options: Any) -> EventStream[Conversation]:
        """New conversations as they are created (XMTP's ``conversations.stream``). No
        consent filter: a conversation is created before anyone joins it."""
        def convert(event: Event) -> Conversation | None:
            body = event.data.get("conversation")
            return Conversation.from_json(body, self._http) if isinstance(body, dict) else None

        return EventStream(self._http, params=stream_params(types=("conversation.added",)),
                           options=StreamOptions(**options), convert=convert)


class GatewayClient:
    def __init__(self, base_url: str, token: str, *,
                 session: aiohttp.ClientSession | None = None) -> None:
        self._own_session = session is None
        self._session = session
        self._base_url = base_url
        self._token = token
        self._http: Http | None = None

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    @property
    def http(self) -> Http:
        # the session is made on first use, inside the running loop
        if self._http is None:
            if self._session is None:
                self._session = aiohttp.ClientSession()
            self._http = Http(self._base_url, self._token, self._session)
        return self._http

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()

    @property
    def conversations(self) -> Conversations:
        return Conversations(self.http)

    def messages(self, *, since: TimeArg = None, until: TimeArg = None,
                 limit: int | None = None, page_size: int = 50) -> Paginator[Message]:
        """Messages across conversations, oldest first (SignalWire's ``getMessages``)."""
        async def fetch(params: Mapping[str, str]) -> Any:
            return await self.http.request("GET", "/v1/messages", params=params)

        return Paginator(fetch, query(page_size=min(page_size, limit or page_size),
                                      since=_since(since), until=_since(until)),
                         Message.from_json, size_name="page_size", limit=limit)

    def stream(self, *, conversation_id: str | None = None,
               types: tuple[str, ...] | None = None, consent: ConsentArg = None,
               **options: Any) -> EventStream[Event]:
        """Every event (or those of ``types``, of one conversation, of conversations with
        a participant of that ``consent``) as it happens."""
        return event_stream(self.http, conversation_id=conversation_id, types=types,
                            consent=consent, options=StreamOptions(**options))

    def stream_messages(self, *, conversation_id: str | None = None,
                        consent: ConsentArg = None, **options: Any) -> EventStream[Message]:
        """New messages in every conversation (or one, or those with a participant of
        that ``consent``: XMTP's ``streamAllMessages(consentStates)``), as ``Message``
        objects."""
        return message_stream(self.http, conversation_id=conversation_id, consent=consent,
                              options=StreamOptions(**options))
