"""A conversation's event stream is not stalled by other conversations' removals: the
filter is applied before the page limit, on every backend. A deleted conversation's
events keep its id, so its filtered stream still holds its whole history."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest

from gateway.store import SqlStore, open_store
from gateway.store.queries import queries_for
from tests.contract.scenario import KEYS

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_other_conversations_removals_do_not_fill_a_filtered_page(
        backend: str, tmp_path: Path) -> None:
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/events.db"
    else:
        url = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "")
        if not url:
            pytest.skip("GATEWAY_TEST_POSTGRES_URL is not set")
    store = await open_store(url, keys=KEYS, active_key=next(iter(KEYS)))
    queries = queries_for(store)
    now = datetime.datetime.now(datetime.UTC)
    try:
        async with store.transaction() as tx:
            target = await tx.create_conversation(rule=None, now=now)
            after = max([0, *[e.id for e in await tx.list_events(after=0, limit=10_000)]])
        for _ in range(30):
            async with store.transaction() as tx:
                other = await tx.create_conversation(rule=None, now=now)
                await queries.delete_conversation(
                    tx, other.id, removed_event={"conversation_id": other.id}, now=now)
        async with store.transaction() as tx:
            await tx.add_event("conversation.updated", conversation_id=target.id, data={},
                               now=now)
        page = await queries.list_events(after=after, limit=10, conversation_id=target.id)
        assert [e.type for e in page] == ["conversation.updated"]
    finally:
        await queries.close()
        await store.close()



async def test_a_deleted_conversation_s_events_keep_its_id(store: SqlStore) -> None:
    queries = queries_for(store)
    now = datetime.datetime.now(datetime.UTC)
    try:
        async with store.transaction() as tx:
            gone = await tx.create_conversation(rule=None, now=now)
            await tx.add_event("conversation.added", conversation_id=gone.id, data={},
                               now=now)
            await tx.add_event("message.added", conversation_id=gone.id,
                               data={"message_id": "IM" + "1" * 32, "index": 0}, now=now)
        async with store.transaction() as tx:
            removed = await queries.delete_conversation(
                tx, gone.id, removed_event={"conversation_id": gone.id}, now=now)
        assert removed.conversation_id == gone.id
        expected = [("conversation.added", gone.id), ("message.added", gone.id),
                    ("conversation.removed", gone.id)]
        everything = await queries.list_events(after=0, limit=10)
        assert [(e.type, e.conversation_id) for e in everything] == expected
        filtered = await queries.list_events(after=0, limit=10, conversation_id=gone.id)
        assert [(e.type, e.conversation_id) for e in filtered] == expected
        async with store.transaction() as tx:  # the relay's own reader agrees
            assert [e.type for e in await tx.list_events(
                after=0, limit=10, conversation_id=gone.id)] == [t for t, _ in expected]
    finally:
        await queries.close()
