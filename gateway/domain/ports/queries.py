"""What the API reads from the store beyond ``StoreTx``: keyset-paged listings and the
few writes the relay never makes (renaming, deleting a conversation).

Reads open their own short read transaction; writes take the caller's ``StoreTx`` so
they commit together with the event that announces them. Implemented over SQLAlchemy in
``gateway.store.queries``; the API's pagination turns windows and slices into pages.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from gateway.domain.ids import ConversationId, MessageId
from gateway.domain.models import Consent, Conversation, ConversationState, Event, Message
from gateway.domain.ports.store import StoreTx

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50


@dataclass(frozen=True, slots=True)
class Window:
    """Which rows a query should return: up to ``limit`` rows past ``start`` (a listing
    key; None = from the edge) travelling ``forward`` in the listing's order, or
    backward towards its beginning. ``inclusive`` keeps the row at ``start`` itself
    (an explicit anchor)."""

    start: Any
    forward: bool = True
    limit: int = DEFAULT_PAGE_SIZE
    inclusive: bool = False


@dataclass(frozen=True, slots=True)
class Slice(Generic[T]):
    """What a query found for a window: ``items`` in listing order; ``more`` when rows
    continue past them in the travel direction; ``behind`` when rows exist on the other
    side of the window's start."""

    items: list[T]
    more: bool
    behind: bool



@dataclass(frozen=True, slots=True)
class TimeRange:
    """``since`` <= created_at < ``until``; either end may be open."""

    since: datetime | None = None
    until: datetime | None = None


_UNSET: Any = object()


class ApiQueries(Protocol):
    async def close(self) -> None:
        """Releases what the queries opened themselves (not the store)."""

    async def list_conversations(
        self, window: Window, *, state: ConversationState | None,
        consent: frozenset[Consent] | None = None,
    ) -> Slice[Conversation]:
        """Ordered by (created_at, id); window keys are ``[created_at_iso, id]``.
        ``consent``: only conversations with an active participant (one who has not
        left) whose consent is one of these."""

    async def conversations_with_consent(
        self, conversation_ids: Collection[ConversationId], consent: frozenset[Consent],
    ) -> set[ConversationId]:
        """Those of ``conversation_ids`` that have an active participant whose consent is
        one of ``consent``, now (what an event stream filtered by consent sends)."""

    async def list_messages(
        self, conversation_id: ConversationId, window: Window, *, descending: bool,
        period: TimeRange,
    ) -> Slice[Message]:
        """One conversation's messages ordered by index (descending when asked); window
        keys are message indexes."""

    async def list_all_messages(self, window: Window, *, period: TimeRange) -> Slice[Message]:
        """Messages across conversations ordered by (created_at, id); window keys are
        ``[created_at_iso, id]``."""

    async def messages_by_id(self, message_ids: Sequence[MessageId]) -> dict[MessageId, Message]:
        """The messages that exist among these ids (for filling in events)."""

    async def last_event_id(self) -> int:
        """The newest event's id, 0 when the log is empty."""

    async def list_events(
        self, *, after: int, limit: int, conversation_id: ConversationId | None = None,
    ) -> list[Event]:
        """Like ``StoreTx.list_events``, read outside the store's write transactions.
        A conversation's events keep its id after it is deleted, ``conversation.removed``
        included."""

    async def update_conversation(
        self, tx: StoreTx, conversation_id: ConversationId, *, now: datetime,
        friendly_name: str | None = _UNSET, unique_name: str | None = _UNSET,
        attributes: Mapping[str, Any] | None = _UNSET,
    ) -> Conversation:
        """Changes only the fields given. Raises ``Conflict`` when unique_name is taken."""

    async def delete_conversation(
        self, tx: StoreTx, conversation_id: ConversationId, *, removed_event: Mapping[str, Any],
        now: datetime,
    ) -> Event:
        """Deletes the conversation with its participants, messages and deliveries, and
        writes ``conversation.removed`` with ``removed_event`` as its data. Earlier events
        stay in the log with the conversation's id (resumed and filtered streams must not
        lose them)."""
