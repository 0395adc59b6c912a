"""Catch-up after downtime: how long a restarted gateway takes to relay what wallets sent
while it was stopped, with many conversations against few.

For each size (``--small`` and ``--large`` conversations, measured in the same run):

1. a devnode (its own process) and a wallet (a real libxmtp client, here);
2. the gateway (``create_app`` in this process, the real XMTP client, SQLite, a recording
   phone network) opens ``N`` conversations: ``N`` phones text it, and its chat engine
   makes each one's group with the wallet and posts the text;
3. the gateway stops; the wallet posts one message into each of ``--missed`` groups;
4. the gateway starts again: the time from the start until the phone network has all
   the missed messages (and, within it, until the app is up: opening the libxmtp client
   and the store).

The ratio large/small is the figure; the target is at most 3x. ``--profile FILE`` runs
py-spy on this process for the large size's restart (``py-spy`` must be installed).

    python bench/catchup.py [--small 20] [--large 2000] [--missed 10] [--profile out.txt]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

os.environ.setdefault("RUST_LOG", "off")
# tests/ports.py: the repository root
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.app import Parts, create_app
from gateway.appkeys import RELAY
from gateway.config import parse_config
from gateway.domain.clock import SystemClock
from gateway.domain.ids import PhoneNumber
from gateway.domain.models import Channel
from gateway.domain.relay import PhoneText
from gateway.testing.phone_fake import RecordingPhoneNetwork
from gateway.xmtp.client import Conversation, XmtpClient
from tests.ports import free_port

PROXY = "+15550100001"
KEYS = {"k1": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}


@dataclass
class Result:
    conversations: int
    missed: int
    up_seconds: float  # restart -> the app is up (libxmtp client, store, workers)
    relayed_seconds: float  # restart -> every missed message reached the phone network


@contextlib.asynccontextmanager
async def devnode(tmp: Path) -> AsyncIterator[str]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "devnode", "--port", str(port), "--db",
        str(tmp / "devnode.db"), "--log-level", "WARNING",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            with contextlib.suppress(OSError):
                _r, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        await proc.wait()


@contextlib.asynccontextmanager
async def gateway(config_raw: dict[str, object], tmp: Path,
                  phone: RecordingPhoneNetwork) -> AsyncIterator[web.Application]:
    config = parse_config(config_raw, base_dir=tmp)
    app = create_app(config, Parts(phone=phone))
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()  # the cleanup contexts start: store, XMTP client, workers
    try:
        yield app
    finally:
        await runner.cleanup()


async def wait_for(condition: object, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not done in {within}s")
        await asyncio.sleep(0.02)


async def prepare(n: int, home: Path) -> float:
    """``home``: a devnode database, a wallet and a gateway with ``n`` conversations, each
    with its group and a first message; ``home/state.json`` says how to start them again.
    Returns the seconds it took."""
    started = time.monotonic()
    async with devnode(home) as node_url:
        wallet_key = secrets.token_hex(32)
        wallet = await XmtpClient.create(node_url=node_url, private_key=bytes.fromhex(wallet_key),
                                         db_path=str(home / "wallet.db3"))
        raw = {
            "data_dir": str(home / "gw"),
            "server": {"host": "127.0.0.1", "port": free_port()},
            "database": {"url": "sqlite+aiosqlite:///gateway.db", "encryption_keys": KEYS,
                         "active_key": "k1"},
            "twilio": {"account_sid": "AC" + "0" * 32, "auth_token": "bench-token",
                       "api_base_url": "http://127.0.0.1:9",
                       "rate_limits": {"default_per_second": 10000.0}},
            "xmtp": {"env": "local", "node_url": "http://127.0.0.1:1",
                     "wallet_key": "0x" + secrets.token_hex(32),
                     "db_encryption_key": secrets.token_hex(32)},
            "rules": [{"name": "support", "proxy": PROXY, "wallets": [wallet.address]}],
        }
        phone = RecordingPhoneNetwork(SystemClock())
        async with gateway(_on_node(raw, node_url), home, phone) as app:
            relay = app[RELAY]
            for i in range(n):
                await relay.receive_phone_text(PhoneText(
                    external_id=f"SM{i:032d}", from_=PhoneNumber(f"+1555{3000000 + i:07d}"),
                    to=PhoneNumber(PROXY), channel=Channel.SMS, body=f"hello {i}"))
            deadline = time.monotonic() + 60 + n * 0.5
            while len(await _groups(wallet)) < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(await _groups(wallet))} of {n} groups made")
                await asyncio.sleep(0.5)
        wallet.close()
    (home / "state.json").write_text(json.dumps({"n": n, "wallet_key": wallet_key,
                                                 "raw": raw}))
    return time.monotonic() - started


async def settle(home: Path) -> None:
    """Starts the prepared gateway until every delivery it holds is done (a group shows
    at the wallet before its first post is confirmed): a restart then has nothing but
    the missed messages to do."""
    state = json.loads((home / "state.json").read_text())
    async with devnode(home) as node_url, gateway(
            _on_node(state["raw"], node_url), home, RecordingPhoneNetwork(SystemClock())):
        await wait_for(lambda: _open_deliveries(home / "gw" / "gateway.db") == 0, 600,
                       "the prepared gateway's deliveries")
    (home / "state.json").write_text(json.dumps({**state, "settled": True}))


def _open_deliveries(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(database)) as db:
        found = db.execute("SELECT count(*) FROM deliveries"
                           " WHERE state NOT IN ('sent', 'failed')").fetchone()
    return int(found[0])


def _on_node(raw: dict[str, Any], node_url: str) -> dict[str, Any]:
    return {**raw, "xmtp": {**raw["xmtp"], "node_url": node_url}}


async def _groups(wallet: XmtpClient) -> list[Conversation]:
    await wallet.sync_welcomes()
    return [c for c in wallet.conversations() if not c.is_dm]


async def measure(prepared: Path, work: Path, missed: int, profile: Path | None) -> Result:
    """A copy of ``prepared`` in ``work``: stopped, the wallet writes into ``missed``
    groups, the gateway starts again; how long until every missed message is relayed."""
    shutil.copytree(prepared, work)
    state = json.loads((work / "state.json").read_text())
    raw = {**state["raw"], "data_dir": str(work / "gw")}
    async with devnode(work) as node_url:
        wallet = await XmtpClient.create(node_url=node_url,
                                         private_key=bytes.fromhex(state["wallet_key"]),
                                         db_path=str(work / "wallet.db3"))
        for group in (await _groups(wallet))[:missed]:
            await group.sync()
            await group.send_text("while you were away")
        phone = RecordingPhoneNetwork(SystemClock())
        spy = None
        if profile is not None:
            spy = await asyncio.create_subprocess_exec(
                shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                "record", "--pid", str(os.getpid()),
                "--native", "--threads", "--format", "raw", "--rate", "250",
                "-o", str(profile), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await asyncio.sleep(1.0)  # py-spy attaches
        restart = time.monotonic()
        async with gateway(_on_node(raw, node_url), work, phone):
            up = time.monotonic() - restart
            await wait_for(lambda: len(phone.accepted) >= missed, 300, "the missed messages")
            relayed = time.monotonic() - restart
        if spy is not None:
            spy.send_signal(2)
            await spy.wait()
        wallet.close()
    return Result(state["n"], missed, up, relayed)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=20)
    parser.add_argument("--large", type=int, default=2000)
    parser.add_argument("--missed", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3, help="restarts measured per size")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the prepared gateways here and reuse them next time")
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy's raw (collapsed) profile of a large restart")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="catchup-") as tmp:
        keep = args.keep or Path(tmp) / "prepared"
        results: dict[str, list[Result]] = {}
        for size, n in (("small", args.small), ("large", args.large)):
            home = keep / f"{n}"
            if not (home / "state.json").exists():
                shutil.rmtree(home, ignore_errors=True)
                home.mkdir(parents=True)
                seconds = await prepare(n, home)
                print(f"prepared {n} conversations in {seconds:.0f}s", file=sys.stderr)
            if not json.loads((home / "state.json").read_text()).get("settled"):
                await settle(home)
            results[size] = [
                await measure(home, Path(tmp) / f"{size}-{run}", args.missed,
                              args.profile if size == "large" and run == 0 else None)
                for run in range(args.runs)]
    def median(size: str, field: str) -> float:
        return float(statistics.median(getattr(r, field) for r in results[size]))

    print(json.dumps({
        "runs": {size: [asdict(r) for r in runs] for size, runs in results.items()},
        "median_relayed_seconds": {size: round(median(size, "relayed_seconds"), 3)
                                   for size in results},
        "median_up_seconds": {size: round(median(size, "up_seconds"), 3) for size in results},
        "ratio_relayed": round(median("large", "relayed_seconds")
                               / median("small", "relayed_seconds"), 2),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
