"""``ApiQueries`` over the SQL store's tables: keyset-paged listings for the API, and the
two writes only the API makes (rename, delete).

Listings read through their own engine on SQLite: the store's engine opens every
transaction with ``BEGIN IMMEDIATE`` (one writer at a time, on purpose), which would make
a hundred event-stream readers queue behind each other and behind the relay. In WAL mode
plain readers never block nor get blocked. PostgreSQL readers share the store's engine.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.domain.ids import ConversationId, MessageId
from gateway.domain.models import Consent, Conversation, ConversationState, Event, Message
from gateway.domain.ports import Slice, Store, StoreTx, TimeRange, Window
from gateway.errors import Conflict, NotFound, StoreError
from gateway.store import engine as engines
from gateway.store import rows
from gateway.store.crypto import ContentCipher
from gateway.store.sql import SqlStore
from gateway.store.tables import conversations, deliveries, events, messages, participants
from gateway.store.tx import SqlStoreTx

_UNSET: Any = object()
_DATABASE_ERRORS = (sa.exc.SQLAlchemyError, OSError)


def queries_for(store: Store) -> SqlApiQueries:
    if not isinstance(store, SqlStore):
        raise StoreError(f"no API queries for a {type(store).__name__}")
    engine = store.engine
    own_engine = None
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        own_engine = create_async_engine(
            engine.url, hide_parameters=True,
            connect_args={"timeout": engines.SQLITE_BUSY_TIMEOUT_MS / 1000})
    # the API opens the same sealed rows the store writes
    return SqlApiQueries(own_engine or engine, store.cipher, owns_engine=own_engine is not None)


class _Connection(Protocol):
    """What the API's writes use of the store transaction's connection (an
    ``AsyncConnection``, or the store's inline SQLite one)."""

    async def execute(self, statement: Any, parameters: Any = None) -> Any: ...
    def begin_nested(self) -> AbstractAsyncContextManager[Any]: ...


def _connection(tx: StoreTx) -> _Connection:
    if not isinstance(tx, SqlStoreTx):
        raise StoreError(f"API writes need a SQL transaction, not a {type(tx).__name__}")
    connection: _Connection = tx.connection  # the caller's transaction: both commit together
    return connection


def _key_columns(table: sa.Table) -> sa.Tuple:
    return sa.tuple_(table.c.created_at, table.c.id)


def _time_id_key(start: Any) -> tuple[datetime, str]:
    return datetime.fromisoformat(start[0]), str(start[1])


class SqlApiQueries:
    def __init__(self, engine: AsyncEngine, cipher: ContentCipher, *, owns_engine: bool) -> None:
        self._engine = engine
        self._cipher = cipher
        self._owns_engine = owns_engine

    async def close(self) -> None:
        if self._owns_engine:
            await self._engine.dispose()

    async def _rows(self, query: sa.Executable) -> list[sa.RowMapping]:
        try:
            async with self._engine.connect() as connection:
                return list((await connection.execute(query)).mappings().all())
        except _DATABASE_ERRORS as exc:
            raise StoreError(f"database error: {type(exc).__name__}") from exc

    async def _slice(
        self, base: sa.Select[Any], key: Any, start: Any, window: Window, *, ascending: bool,
    ) -> tuple[list[sa.RowMapping], bool, bool]:
        """Rows of ``base`` past ``start`` by ``key``. ``ascending`` is the listing's own
        order; the window travels along it (forward) or against it."""
        travel_up = ascending == window.forward
        query = base
        if start is not None:
            if travel_up:
                query = query.where(key >= start if window.inclusive else key > start)
            else:
                query = query.where(key <= start if window.inclusive else key < start)
        order = [c.asc() if travel_up else c.desc() for c in _columns(key)]
        found = await self._rows(query.order_by(*order).limit(window.limit + 1))
        more = len(found) > window.limit
        found = found[:window.limit]
        if not window.forward:
            found.reverse()
        behind = False
        if start is not None:
            if travel_up:
                other = key < start if window.inclusive else key <= start
            else:
                other = key > start if window.inclusive else key >= start
            behind = bool(await self._rows(base.where(other).limit(1)))
        return found, more, behind

    # ---- listings ---------------------------------------------------------------------

    async def list_conversations(
        self, window: Window, *, state: ConversationState | None,
        consent: frozenset[Consent] | None = None,
    ) -> Slice[Conversation]:
        base = conversations.select()
        if state is not None:
            base = base.where(conversations.c.state == state.value)
        if consent is not None:
            base = base.where(_has_participant_with(conversations.c.id, consent))
        start = _time_id_key(window.start) if window.start is not None else None
        found, more, behind = await self._slice(
            base, _key_columns(conversations), start, window, ascending=True)
        return Slice([rows.conversation(r) for r in found], more, behind)

    async def list_messages(
        self, conversation_id: ConversationId, window: Window, *, descending: bool,
        period: TimeRange,
    ) -> Slice[Message]:
        base = _in_period(messages.select().where(messages.c.conversation_id == conversation_id),
                          period)
        found, more, behind = await self._slice(
            base, messages.c.index, window.start, window, ascending=not descending)
        return Slice([rows.message(r, self._cipher) for r in found], more, behind)

    async def list_all_messages(self, window: Window, *, period: TimeRange) -> Slice[Message]:
        base = _in_period(messages.select(), period)
        start = _time_id_key(window.start) if window.start is not None else None
        found, more, behind = await self._slice(
            base, _key_columns(messages), start, window, ascending=True)
        return Slice([rows.message(r, self._cipher) for r in found], more, behind)

    async def conversations_with_consent(
        self, conversation_ids: Collection[ConversationId], consent: frozenset[Consent],
    ) -> set[ConversationId]:
        if not conversation_ids:
            return set()
        found = await self._rows(
            sa.select(participants.c.conversation_id.label("id")).distinct()
            .where(participants.c.conversation_id.in_(sorted(conversation_ids)),
                   participants.c.left_at.is_(None),
                   participants.c.consent.in_(sorted(c.value for c in consent))))
        return {ConversationId(r["id"]) for r in found}

    async def messages_by_id(self, message_ids: Sequence[MessageId]) -> dict[MessageId, Message]:
        if not message_ids:
            return {}
        found = await self._rows(messages.select().where(messages.c.id.in_(list(message_ids))))
        return {MessageId(r["id"]): rows.message(r, self._cipher) for r in found}

    # ---- the event log ----------------------------------------------------------------

    async def last_event_id(self) -> int:
        found = await self._rows(sa.select(sa.func.max(events.c.id).label("newest")))
        newest = found[0]["newest"] if found else None
        return int(newest) if newest is not None else 0

    async def list_events(
        self, *, after: int, limit: int, conversation_id: ConversationId | None = None,
    ) -> list[Event]:
        query = events.select().where(events.c.id > after)
        if conversation_id is not None:
            # Matched in SQL, so LIMIT counts only this conversation's events; a deleted
            # conversation's events, its removal included, keep its id.
            query = query.where(events.c.conversation_id == conversation_id)
        return [rows.event(r) for r in
                await self._rows(query.order_by(events.c.id).limit(limit))]

    # ---- writes in the caller's transaction ----------------------------------------------

    async def update_conversation(
        self, tx: StoreTx, conversation_id: ConversationId, *, now: datetime,
        friendly_name: str | None = _UNSET, unique_name: str | None = _UNSET,
        attributes: Mapping[str, Any] | None = _UNSET,
    ) -> Conversation:
        connection = _connection(tx)
        values: dict[str, Any] = {"updated_at": now}
        if friendly_name is not _UNSET:
            values["friendly_name"] = friendly_name
        if attributes is not _UNSET:
            values["attributes"] = dict(attributes or {})
        if unique_name is not _UNSET:
            values["unique_name"] = unique_name
            if unique_name is not None:
                holder = (await connection.execute(
                    sa.select(conversations.c.id).where(
                        conversations.c.unique_name == unique_name,
                        conversations.c.id != conversation_id))).first()
                if holder is not None:
                    raise Conflict(f"a conversation named {unique_name!r} already exists")
        try:
            # a savepoint, so losing a race for the name leaves the transaction usable
            async with connection.begin_nested():
                row = (await connection.execute(
                    conversations.update().where(conversations.c.id == conversation_id)
                    .values(**values).returning(*conversations.c))).mappings().first()
        except sa.exc.IntegrityError:
            raise Conflict(f"a conversation named {unique_name!r} already exists") from None
        if row is None:
            raise NotFound(f"no conversation {conversation_id}")
        return rows.conversation(row)

    async def delete_conversation(
        self, tx: StoreTx, conversation_id: ConversationId, *,
        removed_event: Mapping[str, Any], now: datetime,
    ) -> Event:
        connection = _connection(tx)
        its_messages = sa.select(messages.c.id).where(
            messages.c.conversation_id == conversation_id)
        its_participants = sa.select(participants.c.id).where(
            participants.c.conversation_id == conversation_id)
        await connection.execute(deliveries.delete().where(sa.or_(
            deliveries.c.message_id.in_(its_messages),
            deliveries.c.participant_id.in_(its_participants))))
        await connection.execute(messages.delete().where(
            messages.c.conversation_id == conversation_id))
        await connection.execute(participants.delete().where(
            participants.c.conversation_id == conversation_id))
        # Earlier events stay in the log, still naming the conversation (no foreign key
        # holds them to its row), for streams that resume or filter by it.
        await connection.execute(conversations.delete().where(
            conversations.c.id == conversation_id))
        return await tx.add_event("conversation.removed", conversation_id=conversation_id,
                                  data=removed_event, now=now)


def _has_participant_with(conversation_id: Any, consent: frozenset[Consent]) -> Any:
    """EXISTS an active participant of the conversation whose consent is one of these
    (participants are indexed by conversation_id)."""
    return sa.exists().where(participants.c.conversation_id == conversation_id,
                             participants.c.left_at.is_(None),
                             participants.c.consent.in_(sorted(c.value for c in consent)))


def _in_period(query: sa.Select[Any], period: TimeRange) -> sa.Select[Any]:
    if period.since is not None:
        query = query.where(messages.c.created_at >= period.since)
    if period.until is not None:
        query = query.where(messages.c.created_at < period.until)
    return query


def _columns(key: Any) -> list[Any]:
    return list(key.clauses) if isinstance(key, sa.Tuple) else [key]
