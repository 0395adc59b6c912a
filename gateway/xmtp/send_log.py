"""Which XMTP message each gateway send prepared: the bridge's half of libxmtp's intent log.

A send into a group is two steps: libxmtp prepares the message (stores it with its id,
unpublished, and queues the publish intent), then publishes it. The id is written here
under the sender's key (the gateway's message id) between the two steps. When a send's
outcome is unknown — the process died, or the publish failed after the node may have
stored it — the retry finds the key and publishes the *same* prepared message again,
which libxmtp treats as a no-op once published and the node stores once. A message is
therefore never sent twice because a send was retried.

Groups are keyed the same way (the conversation's id): a group creation is recorded as
started before libxmtp makes the group (which carries the key in its metadata,
``app_data``) and with its id once made, so a creation retried after the process died
returns the group made the first time instead of a second, empty one.

Kept in a small SQLite file next to libxmtp's database (on the same volume: the prepared
message is in libxmtp's database); sends older than a week are dropped on open (a
delivery is retried for minutes, not weeks).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

_KEEP_SECONDS = 7 * 24 * 3600


class SendLog:
    def __init__(self, path: Path | None) -> None:
        """``path=None`` keeps the log in memory (a client whose database is in memory)."""
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(":memory:" if path is None else str(path),
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # No fsync per send: WAL with NORMAL survives the process dying (the case this log
        # is for), as the gateway's own store does; only a power cut may lose the tail.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS sends (key TEXT PRIMARY KEY, group_id TEXT NOT NULL,"
            " message_id TEXT NOT NULL, created_at REAL NOT NULL)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS groups (key TEXT PRIMARY KEY, group_id TEXT,"
            " created_at REAL NOT NULL)")
        self._db.execute("DELETE FROM sends WHERE created_at < ?",
                         (time.time() - _KEEP_SECONDS,))
        self._db.commit()

    def find(self, key: str) -> tuple[str, str] | None:
        """(group id, message id) prepared under ``key``, if any."""
        row = self._db.execute("SELECT group_id, message_id FROM sends WHERE key = ?",
                               (key,)).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def record(self, key: str, group_id: str, message_id: str) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO sends VALUES (?, ?, ?, ?)",
                             (key, group_id, message_id, time.time()))

    def group_of(self, key: str) -> tuple[str | None] | None:
        """None: no group was ever made under ``key``; ``(None,)``: one was being made
        when the process stopped (find it by its metadata); ``(id,)``: it was made."""
        row = self._db.execute("SELECT group_id FROM groups WHERE key = ?", (key,)).fetchone()
        return (str(row[0]) if row[0] else None,) if row else None

    def group_started(self, key: str) -> None:
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO groups VALUES (?, NULL, ?)",
                             (key, time.time()))

    def group_made(self, key: str, group_id: str) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO groups VALUES (?, ?, ?)",
                             (key, group_id, time.time()))

    def group_dropped(self, key: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM groups WHERE key = ? AND group_id IS NULL", (key,))

    def close(self) -> None:
        self._db.close()
