"""Inbound webhook ingest: the gateway against two baselines, side by side.

Each server runs in its own process; this process is the load generator for all three,
in the same run, so the ratios hold on a noisy machine. For the gateway every request is
a signed, distinct inbound SMS that is verified, recorded (SQLite, WAL), routed and put
in the outbox before the 200. The baselines:

- bare: an aiohttp handler that reads the form and answers 200;
- durable: the least a handler that keeps what it acknowledges must do — read the form,
  check the signature with twilio's ``RequestValidator``, insert one row keyed by
  MessageSid into SQLite (WAL, ``synchronous=NORMAL`` as the gateway) and commit.

    .venv/bin/python bench/ingest.py [--requests 3000] [--concurrency 32] [--rate 300]

Two measures per server: throughput with ``--concurrency`` requests in flight (closed
loop), and latency at a fixed ``--rate`` (open loop, ``--seconds`` long).

The gateway keeps its default XMTP write budget (2,850 writes per 5 minutes after the
headroom), and the closed loop alone asks more of it (a text each, and a group for each
of the 500 phones), so the open loop runs while the outbox holds a backlog paced into
the next window: what the webhook costs while the chat side is behind is part of what
is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.ports import free_port

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "f3b1a2c4d5e6f708192a3b4c5d6e7f80"  # noqa: S105 - a benchmark's fixed token
PROXY = "+15550100001"


def _serve_bare(port: int) -> None:
    async def handler(request: web.Request) -> web.Response:
        await request.post()
        return web.Response(text="<Response></Response>", content_type="text/xml")

    from gateway.serve import run_server

    app = web.Application()
    app.router.add_post("/twilio/messages", handler)
    run_server(app, host="127.0.0.1", port=port)  # the same server set-up as the gateway


def _serve_durable(port: int, data_dir: str) -> None:
    import sqlite3

    from twilio.request_validator import RequestValidator

    from gateway.serve import run_server

    db = sqlite3.connect(os.path.join(data_dir, "durable.db"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE texts (sid TEXT PRIMARY KEY, sender TEXT, body TEXT)")
    validator = RequestValidator(AUTH_TOKEN)
    url = f"http://127.0.0.1:{port}/twilio/messages"

    async def handler(request: web.Request) -> web.Response:
        form = await request.post()
        if not validator.validate(url, form, request.headers.get("X-Twilio-Signature", "")):
            raise web.HTTPForbidden()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO texts VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                   (form["MessageSid"], form["From"], form["Body"]))
        db.execute("COMMIT")
        return web.Response(text="<Response></Response>", content_type="text/xml")

    app = web.Application()
    app.router.add_post("/twilio/messages", handler)
    run_server(app, host="127.0.0.1", port=port)


def _serve_gateway(port: int, data_dir: str) -> None:
    from gateway.app import Parts, create_app
    from gateway.config import parse_config
    from gateway.serve import run_server
    from gateway.testing.chat_fake import RecordingChatNetwork

    wallet = "0xAb5801a7D398351b8bE11C439e05C5B3259aeC9B"
    config = parse_config({
        "data_dir": data_dir,
        "server": {"host": "127.0.0.1", "port": port,
                   "public_url": f"http://127.0.0.1:{port}"},
        "database": {"url": "sqlite+aiosqlite:///gateway.db",
                     "encryption_keys": {"k1": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="},
                     "active_key": "k1"},
        "twilio": {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN,
                   "api_base_url": "http://127.0.0.1:9"},
        "xmtp": {"env": "local", "node_url": "http://127.0.0.1:5556",
                 "wallet_key": "0x" + "11" * 32, "db_encryption_key": "22" * 32},
        "rules": [{"name": "support", "proxy": PROXY, "wallets": [wallet]}],
    }, base_dir=data_dir)
    chat = RecordingChatNetwork(reachable=[wallet])
    run_server(create_app(config, Parts(chat=chat)), host="127.0.0.1", port=port)


def _forms(n: int, url: str, tag: str) -> list[tuple[dict[str, str], str]]:
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(AUTH_TOKEN)
    forms = []
    for i in range(n):
        phone = f"+1555{2000000 + i % 500:07d}"  # 500 phones, several texts each
        form = {"MessageSid": f"SM{tag}{i:030d}"[:34], "AccountSid": ACCOUNT_SID,
                "From": phone, "To": PROXY, "Body": f"benchmark text {i}", "NumMedia": "0"}
        forms.append((form, validator.compute_signature(url, form)))
    return forms


async def _wait_up(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(url):
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def _post(session: aiohttp.ClientSession, url: str, form: dict[str, str],
                signature: str) -> float:
    start = time.perf_counter()
    async with session.post(url, data=form, headers={"X-Twilio-Signature": signature}) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"{url} answered {r.status}")
    return time.perf_counter() - start


async def _closed_loop(url: str, forms: list[tuple[dict[str, str], str]],
                       concurrency: int) -> tuple[float, list[float]]:
    queue = list(reversed(forms))
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            while queue:
                form, signature = queue.pop()
                latencies.append(await _post(session, url, form, signature))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return len(forms) / elapsed, latencies


async def _open_loop(url: str, forms: list[tuple[dict[str, str], str]],
                     rate: float) -> list[float]:
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        start = time.perf_counter()
        tasks = []
        for i, (form, signature) in enumerate(forms):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_post(session, url, form, signature)))
        latencies = list(await asyncio.gather(*tasks))
    return latencies


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


async def _measure(name: str, port: int, args: argparse.Namespace) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/twilio/messages"
    await _wait_up(f"http://127.0.0.1:{port}/")
    warm = _forms(200, url, f"W{name[0]}")
    await _closed_loop(url, warm, 8)
    throughput, closed = await _closed_loop(
        url, _forms(args.requests, url, f"C{name[0]}"), args.concurrency)
    opened = await _open_loop(url, _forms(int(args.rate * args.seconds), url, f"O{name[0]}"),
                              args.rate)
    return {"throughput": throughput, "closed_p50": _pct(closed, 50),
            "closed_p99": _pct(closed, 99), "rate_p50": _pct(opened, 50),
            "rate_p99": _pct(opened, 99), "rate_mean": statistics.fmean(opened) * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as data_dir:
        for name, target, extra in (("bare", _serve_bare, ()),
                                    ("durable", _serve_durable, (data_dir,)),
                                    ("gateway", _serve_gateway, (data_dir,))):
            port = free_port()
            process = ctx.Process(target=target, args=(port, *extra), daemon=True)
            process.start()
            try:
                results[name] = asyncio.run(_measure(name, port, args))
            finally:
                process.terminate()
                process.join(10)

    print(f"{'server':<10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}"
          f"{'@' + str(int(args.rate)) + '/s p50':>14}{'p99':>8}")
    for name, r in results.items():
        print(f"{name:<10}{r['throughput']:>10.0f}{r['closed_p50']:>10.1f}"
              f"{r['closed_p99']:>10.1f}{r['rate_p50']:>14.1f}{r['rate_p99']:>8.1f}")
    ratio = results["gateway"]["throughput"] / results["bare"]["throughput"]
    durable = results["gateway"]["throughput"] / results["durable"]["throughput"]
    print(f"\ngateway/bare throughput ratio: {ratio:.2f}")
    print(f"gateway/durable floor throughput ratio: {durable:.2f}")
    print(f"gateway p99 at {args.rate:.0f} req/s: {results['gateway']['rate_p99']:.1f} ms "
          "(target < 20 ms)")
    print(f"cores: {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
