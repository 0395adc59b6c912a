"""What the API returns, as objects with the seed SDKs' verbs in Python style:
``conversation.add_participant()``, ``.participants()``, ``.leave()``, ``.messages()``,
``.send()``..."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from gateway.client.http import Http, query
from gateway.client.paging import Paginator

if TYPE_CHECKING:
    from gateway.client.stream import EventStream, StreamOptions

TimeArg = datetime | float | int | None


def _time(raw: str | None) -> datetime | None:
    return datetime.fromisoformat(raw) if raw is not None else None


def _since(value: TimeArg) -> str | None:
    """Seconds since the epoch (SignalWire's since/until) or a datetime."""
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else repr(float(value))


@dataclass(frozen=True)
class Receipt:
    id: str
    participant_id: str
    channel: str
    state: str
    attempts: int
    error_code: int | None
    error_message: str | None
    updated_at: datetime | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Receipt:
        return cls(body["id"], body["participant_id"], body["channel"], body["state"],
                   body["attempts"], body["error_code"], body["error_message"],
                   _time(body["updated_at"]))


@dataclass(frozen=True)
class Message:
    id: str
    conversation_id: str
    index: int
    author: str | None
    body: str | None
    media_urls: tuple[str, ...]
    attributes: Mapping[str, Any]
    source: str
    created_at: datetime | None
    receipts: tuple[Receipt, ...] | None = None  # only when fetched one by one

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Message:
        receipts = body.get("receipts")
        return cls(body["id"], body["conversation_id"], body["index"], body["author"],
                   body["body"], tuple(m["url"] for m in body["media"]),
                   body["attributes"], body["source"], _time(body["created_at"]),
                   tuple(Receipt.from_json(r) for r in receipts) if receipts is not None
                   else None)


@dataclass(frozen=True)
class Participant:
    id: str
    conversation_id: str
    channel: str
    identity: str | None
    address: str | None
    proxy_address: str | None
    consent: str
    attributes: Mapping[str, Any]
    joined_at: datetime | None
    left_at: datetime | None

    @property
    def is_chat(self) -> bool:
        return self.channel == "xmtp"

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Participant:
        return cls(body["id"], body["conversation_id"], body["channel"], body["identity"],
                   body["address"], body["proxy_address"], body["consent"],
                   body["attributes"], _time(body["joined_at"]), _time(body["left_at"]))


@dataclass(frozen=True)
class Conversation:
    id: str
    unique_name: str | None
    friendly_name: str | None
    attributes: Mapping[str, Any]
    state: str
    xmtp_group_id: str | None
    created_at: datetime | None
    last_message_at: datetime | None
    _http: Http = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any], http: Http) -> Conversation:
        return cls(body["id"], body["unique_name"], body["friendly_name"], body["attributes"],
                   body["state"], body["xmtp_group_id"], _time(body["created_at"]),
                   _time(body["last_message_at"]), http)

    @property
    def _path(self) -> str:
        return f"/v1/conversations/{self.id}"

    # ---- the conversation itself --------------------------------------------------------

    async def refresh(self) -> Conversation:
        return Conversation.from_json(await self._http.request("GET", self._path), self._http)

    async def update(self, **changes: Any) -> Conversation:
        """``friendly_name=``, ``unique_name=``, ``attributes=``, ``state=``."""
        body = await self._http.request("PATCH", self._path, json=changes)
        return Conversation.from_json(body, self._http)

    async def close(self) -> Conversation:
        return await self.update(state="closed")

    async def delete(self) -> None:
        await self._http.request("DELETE", self._path)

    # ---- participants -------------------------------------------------------------------

    async def add_participant(
        self, identity: str | None = None, *, address: str | None = None,
        proxy_address: str | None = None, channel: Literal["sms", "whatsapp"] = "sms",
        attributes: Mapping[str, Any] | None = None,
    ) -> Participant:
        """A wallet (``identity``, a chat participant) or a phone (``address`` reached
        through our ``proxy_address``, a non-chat participant)."""
        body: dict[str, Any] = {"attributes": dict(attributes or {})}
        if identity is not None:
            body["identity"] = identity
        else:
            body.update(address=address, proxy_address=proxy_address, channel=channel)
        found = await self._http.request("POST", f"{self._path}/participants", json=body)
        return Participant.from_json(found)

    async def add_non_chat_participant(self, proxy_address: str, address: str, *,
                                       channel: Literal["sms", "whatsapp"] = "sms") -> Participant:
        """Twilio's ``addNonChatParticipant(proxyAddress, address)``."""
        return await self.add_participant(address=address, proxy_address=proxy_address,
                                          channel=channel)

    async def participants(self, *, include_left: bool = False) -> list[Participant]:
        found = await self._http.request("GET", f"{self._path}/participants",
                                         params=query(include_left=include_left))
        return [Participant.from_json(p) for p in found["data"]]

    async def leave(self, participant: Participant | str) -> None:
        """Removes a participant (by object, id, wallet or phone); a wallet leaves the
        conversation's XMTP group."""
        if isinstance(participant, Participant):
            participant_id = participant.id
        else:
            participant_id = participant
            if not participant.startswith("MB"):
                wanted = participant.lower()
                for p in await self.participants():
                    if wanted in ((p.identity or "").lower(), p.address):
                        participant_id = p.id
                        break
        await self._http.request("DELETE", f"{self._path}/participants/{participant_id}")

    # ---- messages -----------------------------------------------------------------------

    async def send(self, body: str | None = None, *, author: str | None = None,
                   media_urls: Sequence[str] = (),
                   attributes: Mapping[str, Any] | None = None) -> Message:
        payload: dict[str, Any] = {"body": body, "author": author,
                                   "attributes": dict(attributes or {})}
        if media_urls:
            payload["media_url"] = list(media_urls)
        found = await self._http.request("POST", f"{self._path}/messages", json=payload)
        return Message.from_json(found)

    def messages(
        self, *, limit: int | None = None, since: TimeArg = None, until: TimeArg = None,
        direction: Literal["forwards", "backwards"] = "forwards", page_size: int = 50,
        anchor: int | None = None,
    ) -> Paginator[Message]:
        """Messages by index, oldest first (``forwards``) or newest first (``backwards``),
        at most ``limit``, from ``anchor`` (an index) when given."""
        if direction not in ("forwards", "backwards"):
            raise ValueError("direction is 'forwards' or 'backwards'")
        params = query(page_size=min(page_size, limit or page_size),
                       order="asc" if direction == "forwards" else "desc",
                       anchor=anchor, since=_since(since), until=_since(until))
        path = f"{self._path}/messages"

        async def fetch(p: Mapping[str, str]) -> Any:
            return await self._http.request("GET", path, params=p)

        return Paginator(fetch, params, Message.from_json, size_name="page_size", limit=limit)

    async def message(self, message_id: str) -> Message:
        """One message with its per-participant delivery receipts."""
        found = await self._http.request("GET", f"{self._path}/messages/{message_id}")
        return Message.from_json(found)

    def stream_messages(self, **options: Any) -> EventStream[Message]:
        """This conversation's new messages, as ``Client.stream_messages``."""
        from gateway.client.stream import message_stream

        return message_stream(self._http, conversation_id=self.id,
                              options=_options(options))


@dataclass(frozen=True)
class Event:
    id: int
    type: str
    conversation_id: str | None
    created_at: datetime | None
    data: Mapping[str, Any]

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Event:
        return cls(body["id"], body["type"], body["conversation_id"],
                   _time(body["created_at"]), body["data"])


def _options(options: Mapping[str, Any]) -> StreamOptions:
    from gateway.client.stream import StreamOptions

    return StreamOptions(**options)
