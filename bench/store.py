"""The store's share of an inbound text: the relay's transaction against raw sqlite3.

One run, one process, two SQLite files set up the same way (the relay opened a
conversation for every phone on each). Then, text after text:

- relay: ``Relay.receive_phone_text`` for a reply in an existing conversation, through
  the real ``SqlStore`` (inline pysqlite): look-up, contact, routing, message, outbox,
  event — everything the webhook's transaction does;
- raw: the same number of SQLite statements, written by hand against the stdlib
  ``sqlite3`` module, doing the same reads and writes with no conversion to domain
  objects (and no sealing of the body: its cost is printed on its own line).

Both sides count the statements SQLite really ran (``set_trace_callback``), so the
comparison stays honest when the store changes. CPU time is ``process_time``.

    /work/venv/bin/python bench/store.py [--texts 2000] [--phones 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.config import parse_config  # after the path set-up above
from gateway.domain.clock import SystemClock
from gateway.domain.ids import PhoneNumber
from gateway.domain.models import Channel
from gateway.domain.relay import PhoneText, Relay
from gateway.domain.routing import Outcome
from gateway.store import SqlStore, open_store

PROXY = PhoneNumber("+15550100001")
WALLET = "0xAb5801a7D398351b8bE11C439e05C5B3259aeC9B"
KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


class StatementCounter:
    """Counts the statements SQLite runs on every connection the store's engines open."""

    def __init__(self) -> None:
        self.count = 0
        self.on = False
        self._connections: list[Any] = []
        event.listen(sa.Engine, "connect", self._connected)

    def _connected(self, dbapi_connection: Any, _record: Any) -> None:
        # aiosqlite wraps its sqlite3 connection; the store's inline engine is pysqlite
        raw = getattr(dbapi_connection, "driver_connection", dbapi_connection)
        if isinstance(raw, sqlite3.Connection):
            raw.set_trace_callback(self.trace)

    def trace(self, _statement: str) -> None:
        if self.on:
            self.count += 1


def _config(data_dir: str) -> Any:
    return parse_config({
        "data_dir": data_dir,
        "server": {"host": "127.0.0.1", "port": 8080, "public_url": "http://127.0.0.1:8080"},
        "database": {"url": "sqlite+aiosqlite:///gateway.db",
                     "encryption_keys": {"k1": KEY}, "active_key": "k1"},
        "twilio": {"account_sid": "AC" + "0123456789abcdef" * 2,
                   "auth_token": "f3b1a2c4d5e6f708192a3b4c5d6e7f80",
                   "api_base_url": "http://127.0.0.1:9"},
        "xmtp": {"env": "local", "node_url": "http://127.0.0.1:5556",
                 "wallet_key": "0x" + "11" * 32, "db_encryption_key": "22" * 32},
        "rules": [{"name": "support", "proxy": PROXY, "wallets": [WALLET]}],
    }, base_dir=data_dir)


def _phones(n: int) -> list[PhoneNumber]:
    return [PhoneNumber(f"+1555{2000000 + i:07d}") for i in range(n)]


def _texts(phones: list[PhoneNumber], n: int, tag: str) -> list[PhoneText]:
    return [PhoneText(external_id=f"SM{tag}{i:030d}", from_=phones[i % len(phones)],
                      to=PROXY, channel=Channel.SMS, body=f"benchmark text {i}")
            for i in range(n)]


async def _open(data_dir: str) -> tuple[SqlStore, Relay]:
    config = _config(data_dir)
    store = await open_store(config.database.url, keys=config.database.key_bytes(),
                             active_key=config.database.active_key)
    return store, Relay(store, config.rulebook(), SystemClock())


async def _relay_texts(relay: Relay, texts: list[PhoneText]) -> float:
    """CPU seconds for recording ``texts`` one after another."""
    start = time.process_time()
    for text in texts:
        outcome = await relay.receive_phone_text(text)
        if outcome is not Outcome.RECORDED:
            raise RuntimeError(f"a benchmark text was {outcome}, not recorded")
    return time.process_time() - start


class RawInbound:
    """The relay's reply transaction as hand-written sqlite3 statements."""

    def __init__(self, path: Path, counter: StatementCounter) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.set_trace_callback(counter.trace)
        self._ids = 0

    def _id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}{self._ids:032x}"

    def receive(self, text: PhoneText) -> None:
        db = self.db
        now = datetime.now(UTC).replace(tzinfo=None).isoformat(" ")
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("SELECT * FROM messages WHERE source = ? AND external_id = ?",
                          ("sms", text.external_id)).fetchone() is not None:
                raise RuntimeError("duplicate")
            db.execute(
                "INSERT INTO contacts (address, proxy_address, channel, consent, "
                "first_inbound_at, last_inbound_at, updated_at) VALUES "
                "(?, ?, 'sms', 'unknown', ?, ?, ?) "
                "ON CONFLICT (address, proxy_address, channel) DO UPDATE SET first_inbound_at = "
                "coalesce(contacts.first_inbound_at, excluded.first_inbound_at), "
                "last_inbound_at = excluded.last_inbound_at, updated_at = excluded.updated_at "
                "RETURNING *", (text.from_, text.to, now, now, now)).fetchone()
            phone = db.execute("SELECT * FROM participants WHERE active_pair = ?",
                               (f"{text.from_} {text.to}",)).fetchone()
            conversation_id = phone[1]
            db.execute("SELECT * FROM conversations WHERE id = ?",
                       (conversation_id,)).fetchone()
            (index,) = db.execute(
                "UPDATE conversations SET next_message_index = next_message_index + 1, "
                "last_message_at = ? WHERE id = ? RETURNING next_message_index - 1",
                (now, conversation_id)).fetchone()
            message = db.execute(
                "INSERT INTO messages (id, conversation_id, \"index\", author_id, key_id, "
                "body_ciphertext, media_ciphertext, attributes, source, external_id, "
                "created_at) VALUES (?, ?, ?, ?, 'k1', ?, NULL, '{}', 'sms', ?, ?) "
                "ON CONFLICT DO NOTHING RETURNING *",
                (self._id("IM"), conversation_id, index, phone[0], text.body.encode(),
                 text.external_id, now)).fetchone()
            members = db.execute(
                "SELECT * FROM participants WHERE conversation_id = ? "
                "ORDER BY joined_at, id", (conversation_id,)).fetchall()
            receipts = []
            for member in members:
                if member[0] != phone[0] and member[9] is None:
                    lane = conversation_id if member[2] == "xmtp" else member[0]
                    row = db.execute(
                        "INSERT INTO deliveries (id, message_id, participant_id, channel, "
                        "state, attempts, next_attempt_at, lease_until, provider_id, "
                        "error_code, error_message, created_at, updated_at, lane, position, "
                        "holder, lease_token) VALUES (?, ?, ?, ?, 'pending', 0, ?, NULL, "
                        "NULL, NULL, NULL, ?, ?, ?, ?, NULL, 0) RETURNING *",
                        (self._id("DL"), message[0], member[0], member[2], now, now, now,
                         lane, index)).fetchone()
                    receipts.append({"id": row[0], "state": row[4], "attempts": row[5]})
            db.execute("INSERT INTO events (type, conversation_id, data, created_at) "
                       "VALUES ('message.added', ?, ?, ?) RETURNING *",
                       (conversation_id, json.dumps({"message_id": message[0],
                                                     "index": index,
                                                     "receipts": receipts}), now)).fetchone()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def run(self, texts: list[PhoneText]) -> float:
        start = time.process_time()
        for text in texts:
            self.receive(text)
        return time.process_time() - start


def _per_text(run: Callable[[list[PhoneText]], float], batches: list[list[PhoneText]]) -> float:
    """Median over the rounds of CPU ms per text."""
    return statistics.median(run(batch) / len(batch) for batch in batches) * 1000


async def _main(args: argparse.Namespace) -> int:
    counter = StatementCounter()
    phones = _phones(args.phones)
    with tempfile.TemporaryDirectory() as relay_dir, \
            tempfile.TemporaryDirectory() as raw_dir:
        # both databases get the same conversations, opened by the relay's first texts
        raw_store, raw_relay = await _open(raw_dir)
        await _relay_texts(raw_relay, _texts(phones, len(phones), "F0"))
        await raw_store.close()
        store, relay = await _open(relay_dir)
        first = await _relay_texts(relay, _texts(phones, len(phones), "F1"))

        # warm both, then count one text's statements on each side
        await _relay_texts(relay, _texts(phones, 200, "W1"))
        raw = RawInbound(Path(raw_dir) / "gateway.db", counter)
        raw.run(_texts(phones, 200, "W0"))
        counter.on = True
        await _relay_texts(relay, _texts(phones, 1, "C1"))
        relay_statements, counter.count = counter.count, 0
        raw.run(_texts(phones, 1, "C0"))
        raw_statements, counter.count = counter.count, 0
        counter.on = False

        relay_ms: list[float] = []
        raw_ms: list[float] = []
        for r in range(args.rounds):  # interleaved, so drift on a busy machine hits both
            batch = _texts(phones, args.texts, f"R{r}")
            relay_ms.append(await _relay_texts(relay, batch) / len(batch) * 1000)
            raw_ms.append(raw.run(_texts(phones, args.texts, f"Q{r}")) / len(batch) * 1000)
        raw.db.close()

        cipher = store.cipher
        start = time.process_time()
        for i in range(args.texts):
            cipher.seal(f"benchmark text {i}".encode())
        seal_ms = (time.process_time() - start) / args.texts * 1000
        await store.close()

    relay_cpu, raw_cpu = statistics.median(relay_ms), statistics.median(raw_ms)
    print(f"{args.texts} replies x {args.rounds} rounds over {args.phones} conversations "
          "(median of rounds)")
    print(f"{'':<24}{'CPU ms/text':>12}{'statements':>12}")
    print(f"{'relay (SqlStore)':<24}{relay_cpu:>12.3f}{relay_statements:>12}")
    print(f"{'raw sqlite3':<24}{raw_cpu:>12.3f}{raw_statements:>12}")
    print(f"ratio relay/raw: {relay_cpu / raw_cpu:.1f}x")
    print(f"of which sealing the body (pynacl): {seal_ms:.3f} ms")
    print(f"first text (opens a conversation): {first / len(phones) * 1000:.3f} ms CPU")
    if relay_statements != raw_statements:
        print("warning: the two sides ran different numbers of statements; "
              "update RawInbound to match the store")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--phones", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    return asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
