"""``chat_requests``: chat-network calls a process that does no XMTP work asks of the one
that does (see ``gateway.xmtp.remote``). Rows are short-lived: written by the asker,
taken and answered by the XMTP process, read and deleted by the asker; what nobody came
back for is swept after an hour."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.engine import DATABASE_ERRORS, describe_failure
from gateway.store.tables import chat_requests

PENDING, WORKING, DONE = "pending", "working", "done"
_KEEP = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    id: int
    kind: str
    payload: dict[str, Any]


class ChatRequests:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    async def ask(self, kind: str, payload: dict[str, Any], *, now: datetime,
                  deadline: datetime) -> int:
        try:
            async with self._engine.begin() as connection:
                found = await connection.execute(
                    chat_requests.insert().values(kind=kind, payload=payload, state=PENDING,
                                                  created_at=now, deadline=deadline)
                    .returning(chat_requests.c.id))
                return int(found.scalar_one())
        except DATABASE_ERRORS as exc:
            raise describe_failure("asking the XMTP process", exc) from exc

    async def answer_of(self, request_id: int) -> dict[str, Any] | None:
        """The answer once the request is done; None until then."""
        try:
            async with self._engine.connect() as connection:
                row = (await connection.execute(
                    sa.select(chat_requests.c.state, chat_requests.c.answer)
                    .where(chat_requests.c.id == request_id))).first()
        except DATABASE_ERRORS as exc:
            raise describe_failure("reading the XMTP process's answer", exc) from exc
        if row is None or row.state != DONE:
            return None
        answer: dict[str, Any] = row.answer
        return answer

    async def forget(self, request_id: int) -> None:
        try:
            async with self._engine.begin() as connection:
                await connection.execute(
                    chat_requests.delete().where(chat_requests.c.id == request_id))
        except DATABASE_ERRORS as exc:
            raise describe_failure("deleting a chat request", exc) from exc

    async def take(self, *, now: datetime, limit: int) -> list[ChatRequest]:
        """Pending requests (oldest first) marked as being worked on; those whose asker
        gave up already (past their deadline) are deleted instead, not started."""
        async with self._engine.begin() as connection:
            await connection.execute(chat_requests.delete().where(
                chat_requests.c.state == PENDING, chat_requests.c.deadline < now))
            query = (sa.select(chat_requests.c.id, chat_requests.c.kind,
                               chat_requests.c.payload)
                     .where(chat_requests.c.state == PENDING)
                     .order_by(chat_requests.c.id).limit(limit))
            if self._postgres:
                query = query.with_for_update(skip_locked=True)
            rows = (await connection.execute(query)).all()
            if rows:
                await connection.execute(
                    chat_requests.update()
                    .where(chat_requests.c.id.in_([row.id for row in rows]))
                    .values(state=WORKING))
        return [ChatRequest(row.id, row.kind, row.payload) for row in rows]

    async def answer(self, request_id: int, answer: dict[str, Any]) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                chat_requests.update().where(chat_requests.c.id == request_id)
                .values(state=DONE, answer=answer))

    async def sweep(self, *, now: datetime) -> int:
        """Deletes what was asked more than an hour ago (an asker that died waiting)."""
        async with self._engine.begin() as connection:
            found = await connection.execute(
                chat_requests.delete().where(chat_requests.c.created_at < now - _KEEP))
            return int(found.rowcount)
