"""Conversations API: message pages from a huge conversation against a small one, and
event-stream throughput to many subscribers, measured side by side in one run.

    .venv/bin/python bench/api.py [--messages 100000] [--small 100] [--subscribers 100]
                                  [--events 2000] [--requests 200]

The API runs in its own process (the real app pieces: SQLite store, API routes, event
hub; a recording chat fake); this process seeds the database and is the load generator.

1. Pages: ``GET /v1/conversations/{id}/messages?page_size=50`` at the start, middle and
   end of each conversation (anchor) and newest-first; the median latency of the big
   conversation over the small one should stay near 1 (keyset on the unique
   (conversation_id, index) index, no OFFSET).
2. Events: N subscribers on ``GET /v1/events``; (a) replay: each reads the same N events
   from the log; (b) live: another process (this one) writes N ``message.added`` events
   in batches and the server, noticing them through its poll, fans them out. Events per
   second per subscriber and deliveries per second in total.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.ports import free_port

TOKEN = "bench-token-0123456789abcdef"  # noqa: S105 - a benchmark's fixed token
KEYS = {"k1": bytes(range(32))}
PAGE = 50


def _serve(port: int, db_url: str) -> None:
    from aiohttp import web

    from gateway.api import add_api_routes
    from gateway.api.keys import API_SETTINGS
    from gateway.api.settings import ApiSettings
    from gateway.appkeys import CHAT, CLOCK, STORE
    from gateway.domain.clock import SystemClock
    from gateway.store import open_store
    from gateway.testing.chat_fake import RecordingChatNetwork

    async def app() -> web.Application:
        application = web.Application()
        application[STORE] = await open_store(db_url, keys=KEYS, active_key="k1")
        application[CHAT] = RecordingChatNetwork()
        application[CLOCK] = SystemClock()
        application[API_SETTINGS] = ApiSettings(tokens=(TOKEN,), event_poll_interval=0.1)
        add_api_routes(application)
        return application

    web.run_app(app(), host="127.0.0.1", port=port, print=None, access_log=None)


async def _seed(db_url: str, sizes: dict[str, int]) -> dict[str, str]:
    """Conversations of the given sizes, their messages bulk-inserted sealed as the store
    seals them (going through add_message one by one would take minutes for 100,000)."""
    import sqlalchemy as sa

    from gateway.store import open_store
    from gateway.store.rows import seal_content
    from gateway.store.tables import conversations, messages
    from gateway.store.tx import SqlStoreTx

    store = await open_store(db_url, keys=KEYS, active_key="k1")
    ids = {}
    start = datetime(2026, 1, 1, tzinfo=UTC)
    async with store.transaction() as tx:
        for name in sizes:
            ids[name] = (await tx.create_conversation(rule=None, unique_name=name,
                                                      now=start)).id
        assert isinstance(tx, SqlStoreTx)
        cipher = store.cipher  # the store's own sealing, so the API reads real rows
        connection = tx.connection
        for name, count in sizes.items():
            for first in range(0, count, 5000):
                rows = []
                for index in range(first, min(first + 5000, count)):
                    rows.append({
                        "id": f"IM{name[:4]:0>4}{index:028x}", "conversation_id": ids[name],
                        "index": index, "author_id": None, "attributes": {},
                        "source": "api", "external_id": None,
                        "created_at": start + timedelta(milliseconds=index),
                        **seal_content(cipher, f"message {index} of {name}", ())})
                await connection.execute(messages.insert(), rows)
            await connection.execute(conversations.update().where(
                conversations.c.id == ids[name]).values(
                    next_message_index=count,
                    last_message_at=start + timedelta(milliseconds=count)))
        await connection.execute(sa.text("ANALYZE"))
    await store.close()
    return ids


async def _time_pages(session: aiohttp.ClientSession, base: str,
                      conversations: dict[str, tuple[str, int]],
                      requests: int) -> dict[str, dict[str, list[float]]]:
    """Latencies per conversation and spot, the conversations taking turns request by
    request so that machine noise falls on both alike."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    found: dict[str, dict[str, list[float]]] = {name: {} for name in conversations}
    for _ in range(requests):
        for name, (conversation_id, count) in conversations.items():
            spots = {"start": {"anchor": "0"}, "middle": {"anchor": str(count // 2)},
                     "end": {"anchor": str(max(count - PAGE, 0))},
                     "newest": {"order": "desc"}}
            for spot, params in spots.items():
                began = time.perf_counter()
                async with session.get(
                        f"{base}/v1/conversations/{conversation_id}/messages",
                        params={"page_size": str(PAGE), **params}, headers=headers) as resp:
                    body = await resp.json()
                found[name].setdefault(spot, []).append(time.perf_counter() - began)
                assert resp.status == 200 and len(body["data"]) == PAGE, body
    return found


async def _time_across(session: aiohttp.ClientSession, base: str,
                       requests: int) -> dict[str, list[float]]:
    """``/v1/messages`` (across conversations, by time): first page and a late page."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    spots = {"oldest": {}, "since": {"since": "2026-01-01T00:01:30+00:00"}}
    found: dict[str, list[float]] = {spot: [] for spot in spots}
    for _ in range(requests):
        for spot, params in spots.items():
            began = time.perf_counter()
            async with session.get(f"{base}/v1/messages", params={"limit": str(PAGE), **params},
                                   headers=headers) as resp:
                body = await resp.json()
            found[spot].append(time.perf_counter() - began)
            assert resp.status == 200 and len(body["data"]) == PAGE, body
    return found


async def _subscriber(session: aiohttp.ClientSession, base: str, after: int, want: int,
                      ready: asyncio.Event, counter: list[int]) -> float:
    headers = {"Authorization": f"Bearer {TOKEN}", "Last-Event-ID": str(after)}
    async with session.get(f"{base}/v1/events", headers=headers,
                           timeout=aiohttp.ClientTimeout(total=300)) as resp:
        counter[0] += 1
        if counter[0] == counter[1]:
            ready.set()
        # counting frames in raw chunks keeps this side cheap: the load generator shares
        # the machine with the server
        seen, tail = 0, b""
        async for chunk in resp.content.iter_any():
            joined = tail + chunk
            seen += joined.count(b"\ndata: ") - tail.count(b"\ndata: ")
            tail = joined[-8:]
            if seen >= want:
                return time.perf_counter()
    raise RuntimeError("stream ended early")


async def _fan_out(base: str, subscribers: int, after: int, want: int,
                   produce: Any = None) -> tuple[float, float]:
    """Seconds until every subscriber has ``want`` events after ``after``; ``produce``
    (when given) writes them once all are connected."""
    ready = asyncio.Event()
    counter = [0, subscribers]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [asyncio.create_task(_subscriber(session, base, after, want, ready, counter))
                 for _ in range(subscribers)]
        await asyncio.wait_for(ready.wait(), 60)
        began = time.perf_counter()
        if produce is not None:
            await asyncio.sleep(0.3)  # let every stream reach its wait
            began = time.perf_counter()
            await produce()
        finished = await asyncio.gather(*tasks)
    return began, max(finished)


async def _write_events(db_url: str, conversation_id: str, count: int) -> None:
    """Another gateway process recording messages: events in batches of 100."""
    from gateway.domain.ids import ConversationId, MessageId
    from gateway.store import open_store

    store = await open_store(db_url, keys=KEYS, active_key="k1", migrate=False)
    now = datetime.now(UTC)
    for first in range(0, count, 100):
        async with store.transaction() as tx:
            for index in range(first, min(first + 100, count)):
                await tx.add_event("message.added",
                                   conversation_id=ConversationId(conversation_id),
                                   data={"message_id": MessageId(
                                       f"IM{'smal':0>4}{index % 100:028x}"),
                                       "index": index % 100}, now=now)
    await store.close()


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return f"median {statistics.median(values) * 1000:6.2f} ms  p95 {p95 * 1000:6.2f} ms"


async def main(args: argparse.Namespace) -> None:
    from gateway.store import open_store

    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        began = time.perf_counter()
        ids = await _seed(db_url, {"large": args.messages, "small": args.small})
        print(f"seeded {args.messages} + {args.small} messages in "
              f"{time.perf_counter() - began:.1f} s")
        port = free_port()
        server = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(port, db_url), daemon=True)
        server.start()
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(100):
                    try:
                        async with session.get(f"{base}/v1/openapi.json") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.1)
                both = {"small": (ids["small"], args.small),
                        "large": (ids["large"], args.messages)}
                await _time_pages(session, base, both, 5)  # warm up
                timed = await _time_pages(session, base, both, args.requests)
                small, large = timed["small"], timed["large"]
                across = await _time_across(session, base, args.requests // 4 or 1)
            print(f"\npage of {PAGE} messages ({args.requests} requests per spot)")
            for spot in small:
                ratio = statistics.median(large[spot]) / statistics.median(small[spot])
                print(f"  {spot:7} {args.small:>7}: {_ms(small[spot])}   "
                      f"{args.messages:>7}: {_ms(large[spot])}   ratio {ratio:.2f}")

            for spot, values in across.items():
                print(f"  across conversations, {spot:6}: {_ms(values)}")

            store = await open_store(db_url, keys=KEYS, active_key="k1", migrate=False)
            async with store.transaction() as tx:
                existing = await tx.list_events(after=0, limit=1)
            await store.close()
            start_after = existing[0].id - 1 if existing else 0
            # (b) first, so the replay below reads a log of exactly these events
            began_live, done_live = await _fan_out(
                base, args.subscribers, start_after, args.events,
                produce=lambda: _write_events(db_url, ids["small"], args.events))
            live = done_live - began_live
            began_replay, done_replay = await _fan_out(
                base, args.subscribers, start_after, args.events)
            replay = done_replay - began_replay
            print(f"\nevents to {args.subscribers} subscribers ({args.events} events each)")
            for label, seconds in (("live (written by another process)", live),
                                   ("replay (from Last-Event-ID)", replay)):
                print(f"  {label:34} {seconds:6.2f} s  {args.events / seconds:8.0f} events/s "
                      f"per subscriber  {args.events * args.subscribers / seconds:9.0f} "
                      "deliveries/s")
        finally:
            server.terminate()
            server.join(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=200)
    asyncio.run(main(parser.parse_args()))
