"""SQLite persistence of the devnode: identities, key packages, welcomes, group messages.

Ids come from AUTOINCREMENT columns, so they only grow and survive restarts: a cursor a
client stored before the node restarted still means the same position afterwards.
The node is a single asyncio process and each call is one short transaction, so the
synchronous ``sqlite3`` module is used directly on the event loop's thread.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from gateway.data_dir import Held, claim
from gateway.errors import DevNodeDbInUse

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identity_updates (
    sequence_id INTEGER PRIMARY KEY AUTOINCREMENT,
    inbox_id TEXT NOT NULL,
    server_ns INTEGER NOT NULL,
    payload BLOB NOT NULL,
    digest BLOB NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS identity_updates_inbox ON identity_updates (inbox_id, sequence_id);
CREATE TABLE IF NOT EXISTS inbox_identifiers (
    kind INTEGER NOT NULL,
    identifier TEXT NOT NULL,
    inbox_id TEXT NOT NULL,
    PRIMARY KEY (kind, identifier)
);
CREATE TABLE IF NOT EXISTS key_packages (
    installation_key BLOB PRIMARY KEY,
    key_package BLOB NOT NULL,
    updated_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS group_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id BLOB NOT NULL,
    created_ns INTEGER NOT NULL,
    data BLOB NOT NULL,
    digest BLOB NOT NULL UNIQUE,
    sender_hmac BLOB NOT NULL,
    should_push INTEGER NOT NULL,
    is_commit INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS group_messages_group ON group_messages (group_id, id);
CREATE TABLE IF NOT EXISTS welcome_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    installation_key BLOB NOT NULL,
    created_ns INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    data BLOB NOT NULL,
    digest BLOB NOT NULL UNIQUE,
    hpke_public_key BLOB NOT NULL,
    wrapper_algorithm INTEGER NOT NULL,
    welcome_metadata BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS welcome_messages_key ON welcome_messages (installation_key, id);
CREATE TABLE IF NOT EXISTS commit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id BLOB NOT NULL,
    entry BLOB NOT NULL,
    signature BLOB NOT NULL,
    digest BLOB NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS commit_log_group ON commit_log (group_id, id);
"""


class WelcomeKind(IntEnum):
    V1 = 1
    POINTER = 2


@dataclass(frozen=True, slots=True)
class IdentityUpdateRow:
    sequence_id: int
    server_ns: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class NewGroupMessage:
    group_id: bytes
    data: bytes
    sender_hmac: bytes
    should_push: bool
    is_commit: bool


@dataclass(frozen=True, slots=True)
class StoredGroupMessage:
    id: int
    created_ns: int
    group_id: bytes
    data: bytes
    sender_hmac: bytes
    should_push: bool
    is_commit: bool


@dataclass(frozen=True, slots=True)
class NewWelcome:
    kind: WelcomeKind
    installation_key: bytes
    data: bytes  # the welcome itself (V1) or the welcome pointer
    hpke_public_key: bytes
    wrapper_algorithm: int
    welcome_metadata: bytes


@dataclass(frozen=True, slots=True)
class StoredWelcome:
    id: int
    created_ns: int
    kind: WelcomeKind
    installation_key: bytes
    data: bytes
    hpke_public_key: bytes
    wrapper_algorithm: int
    welcome_metadata: bytes


@dataclass(frozen=True, slots=True)
class CommitLogRow:
    id: int
    entry: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Page:
    """Which rows of a topic a query asks for (the reference node's paging rules)."""

    descending: bool
    cursor: int
    limit: int


def _digest(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


class DevNodeStorage:
    def __init__(self, db: str) -> None:
        # A file database is claimed (``<db>.lock``) for as long as it is open: two
        # nodes writing one log would hand out the same sequence ids.
        self._claim: int | None = None
        if db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
            claimed = claim(Path(f"{db}.lock"))
            if isinstance(claimed, Held):
                raise DevNodeDbInUse(db, claimed.pid)
            self._claim = claimed
        try:
            self._conn = sqlite3.connect(db, isolation_level=None)
        except BaseException:
            self._release()
            raise
        if db != ":memory:":
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        self._last_ns = 0

    def close(self) -> None:
        self._conn.close()
        self._release()

    def _release(self) -> None:
        if self._claim is not None:
            os.close(self._claim)
            self._claim = None

    def _now_ns(self) -> int:
        # strictly increasing, so server timestamps order like ids
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        return self._last_ns

    # --- identity ------------------------------------------------------------------

    def inbox_exists(self, inbox_id: str) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM identity_updates WHERE inbox_id = ? LIMIT 1", (inbox_id,)).fetchone()
        return row is not None

    def add_identity_update(
        self, inbox_id: str, payload: bytes, *,
        associate: Iterable[tuple[int, str]], dissociate: Iterable[tuple[int, str]],
    ) -> int | None:
        """Appends the update; returns its sequence id, or None when this exact update
        is already in the log (a client retrying must not replay its signatures)."""
        with self._transaction():
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO identity_updates (inbox_id, server_ns, payload, digest)"
                " VALUES (?, ?, ?, ?)",
                (inbox_id, self._now_ns(), payload, _digest(inbox_id.encode(), payload)))
            if cur.rowcount == 0:
                return None
            for kind, identifier in associate:
                self._conn.execute(
                    "INSERT OR REPLACE INTO inbox_identifiers (kind, identifier, inbox_id)"
                    " VALUES (?, ?, ?)", (kind, identifier, inbox_id))
            for kind, identifier in dissociate:
                self._conn.execute(
                    "DELETE FROM inbox_identifiers WHERE kind = ? AND identifier = ?"
                    " AND inbox_id = ?", (kind, identifier, inbox_id))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def identity_updates(self, inbox_id: str, after_sequence_id: int) -> list[IdentityUpdateRow]:
        rows = self._conn.execute(
            "SELECT sequence_id, server_ns, payload FROM identity_updates"
            " WHERE inbox_id = ? AND sequence_id > ? ORDER BY sequence_id",
            (inbox_id, after_sequence_id)).fetchall()
        return [IdentityUpdateRow(*row) for row in rows]

    def inbox_id_of(self, kind: int, identifier: str) -> str | None:
        row = self._conn.execute(
            "SELECT inbox_id FROM inbox_identifiers WHERE kind = ? AND identifier = ?",
            (kind, identifier)).fetchone()
        return None if row is None else str(row[0])

    # --- key packages --------------------------------------------------------------

    def put_key_package(self, installation_key: bytes, key_package: bytes) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO key_packages (installation_key, key_package, updated_ns)"
            " VALUES (?, ?, ?)", (installation_key, key_package, self._now_ns()))

    def key_package(self, installation_key: bytes) -> bytes | None:
        row = self._conn.execute(
            "SELECT key_package FROM key_packages WHERE installation_key = ?",
            (installation_key,)).fetchone()
        return None if row is None else bytes(row[0])

    # --- group messages ------------------------------------------------------------

    def add_group_messages(self, messages: Sequence[NewGroupMessage]) -> list[StoredGroupMessage]:
        """Stores the batch in one transaction; returns only the messages that were new
        (an identical payload sent again, as clients do on retry, is kept once)."""
        stored = []
        with self._transaction():
            for m in messages:
                created_ns = self._now_ns()
                cur = self._conn.execute(
                    "INSERT OR IGNORE INTO group_messages (group_id, created_ns, data, digest,"
                    " sender_hmac, should_push, is_commit) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (m.group_id, created_ns, m.data, _digest(m.group_id, m.data),
                     m.sender_hmac, m.should_push, m.is_commit))
                if cur.rowcount == 1:
                    assert cur.lastrowid is not None
                    stored.append(StoredGroupMessage(
                        cur.lastrowid, created_ns, m.group_id, m.data, m.sender_hmac,
                        m.should_push, m.is_commit))
        return stored

    def group_messages(self, group_id: bytes, page: Page) -> list[StoredGroupMessage]:
        rows = self._page(
            "SELECT id, created_ns, group_id, data, sender_hmac, should_push, is_commit"
            " FROM group_messages WHERE group_id = ?", group_id, page)
        return [StoredGroupMessage(r[0], r[1], bytes(r[2]), bytes(r[3]), bytes(r[4]),
                                   bool(r[5]), bool(r[6])) for r in rows]

    def newest_group_message(self, group_id: bytes) -> StoredGroupMessage | None:
        newest = self.group_messages(group_id, Page(descending=True, cursor=0, limit=1))
        return newest[0] if newest else None

    # --- welcomes ------------------------------------------------------------------

    def add_welcomes(self, welcomes: Sequence[NewWelcome]) -> list[StoredWelcome]:
        stored = []
        with self._transaction():
            for w in welcomes:
                created_ns = self._now_ns()
                cur = self._conn.execute(
                    "INSERT OR IGNORE INTO welcome_messages (installation_key, created_ns, kind,"
                    " data, digest, hpke_public_key, wrapper_algorithm, welcome_metadata)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (w.installation_key, created_ns, int(w.kind), w.data,
                     _digest(w.installation_key, w.data), w.hpke_public_key,
                     w.wrapper_algorithm, w.welcome_metadata))
                if cur.rowcount == 1:
                    assert cur.lastrowid is not None
                    stored.append(StoredWelcome(
                        cur.lastrowid, created_ns, w.kind, w.installation_key, w.data,
                        w.hpke_public_key, w.wrapper_algorithm, w.welcome_metadata))
        return stored

    def welcomes(self, installation_key: bytes, page: Page) -> list[StoredWelcome]:
        rows = self._page(
            "SELECT id, created_ns, kind, installation_key, data, hpke_public_key,"
            " wrapper_algorithm, welcome_metadata FROM welcome_messages"
            " WHERE installation_key = ?", installation_key, page)
        return [StoredWelcome(r[0], r[1], WelcomeKind(r[2]), bytes(r[3]), bytes(r[4]),
                              bytes(r[5]), r[6], bytes(r[7])) for r in rows]

    # --- commit log ----------------------------------------------------------------

    def add_commit_log_entries(self, entries: Sequence[tuple[bytes, bytes, bytes]]) -> None:
        """``entries`` are (group_id, serialized entry, serialized signature)."""
        with self._transaction():
            for group_id, entry, signature in entries:
                self._conn.execute(
                    "INSERT OR IGNORE INTO commit_log (group_id, entry, signature, digest)"
                    " VALUES (?, ?, ?, ?)",
                    (group_id, entry, signature, _digest(group_id, entry, signature)))

    def commit_log(self, group_id: bytes, page: Page) -> list[CommitLogRow]:
        rows = self._page(
            "SELECT id, entry, signature FROM commit_log WHERE group_id = ?", group_id, page)
        return [CommitLogRow(r[0], bytes(r[1]), bytes(r[2])) for r in rows]

    # --- helpers -------------------------------------------------------------------

    def _page(self, select: str, key: bytes, page: Page) -> list[Any]:
        # ascending: ids after the cursor; descending: ids before it (0 = from the newest)
        if page.descending:
            cond, order = ("AND id < ?", "DESC") if page.cursor else ("AND ? = 0", "DESC")
        else:
            cond, order = "AND id > ?", "ASC"
        sql = f"{select} {cond} ORDER BY id {order} LIMIT ?"
        return list(self._conn.execute(sql, (key, page.cursor, page.limit)).fetchall())

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
