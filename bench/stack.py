"""What the end-to-end benches share: the processes as deployed (a devnode, the Twilio
simulator and ``gateway serve``, each its own ``python -m gateway …``), signed webhooks,
a libxmtp client's stream timestamped on its own thread, and the figures' summary."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yaml
from twilio.request_validator import RequestValidator

os.environ.setdefault("RUST_LOG", "off")
# The process helpers are the end-to-end tests' (tests/e2e/bridge): the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.twilio.webhooks import MESSAGES_PATH
from gateway.xmtp.client import XmtpClient, XmtpMessage
from gateway.xmtp.loop_thread import LoopThread
from tests.e2e.bridge.harness import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    Process,
    free_port,
    gateway_config,
    wait_for_port,
)

T = TypeVar("T")
SUPPORT = "+15550100001"  # the one rule's number
WAIT = 60.0  # any single wait in a benchmark


class Stack:
    """The deployed processes around the bench, and the phone side's webhook."""

    # the devnode's options beyond its port and database
    devnode_options: tuple[str, ...] = ("--log-level", "WARNING")

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.main = asyncio.get_running_loop()
        self.validator = RequestValidator(AUTH_TOKEN)

    async def on(self, thread: LoopThread, coro: Coroutine[Any, Any, T]) -> T:
        return await thread.run(coro)

    @contextlib.asynccontextmanager
    async def processes(self) -> AsyncIterator[None]:
        self.devnode_port, self.sim_port, self.port = free_port(), free_port(), free_port()
        self.node_url = f"http://127.0.0.1:{self.devnode_port}"
        self.sim_url = f"http://127.0.0.1:{self.sim_port}"
        self.webhook = f"http://127.0.0.1:{self.port}{MESSAGES_PATH}"
        self.devnode = devnode = Process(
            "devnode", ["devnode", "--port", str(self.devnode_port), "--db", ":memory:",
                        *self.devnode_options], self.tmp / "devnode.log")
        sim = Process("twilio-sim", ["twilio-sim", "--port", str(self.sim_port),
                                     "--auth-token", AUTH_TOKEN, "--account-sid", ACCOUNT_SID,
                                     "--webhook-url", self.webhook], self.tmp / "sim.log")
        self.gateway = Process("gateway", ["serve", "--config", str(self.tmp / "gw.yaml")],
                               self.tmp / "gateway.log")
        try:
            devnode.start()
            sim.start()
            await wait_for_port(devnode, self.devnode_port)
            await wait_for_port(sim, self.sim_port)
            yield
        finally:
            for process in (self.gateway, sim, devnode):
                process.stop()

    async def start_gateway(self, wallet: str, *, rule: dict[str, Any] | None = None,
                            twilio: dict[str, Any] | None = None,
                            xmtp: dict[str, Any] | None = None,
                            ready: bool = False) -> None:
        """``gateway serve`` with one fixed rule on SUPPORT to ``wallet``; ``rule``,
        ``twilio`` and ``xmtp`` add to those settings. ``ready``: wait for ``/readyz``
        (its XMTP client up), not only for its port."""
        config = gateway_config(
            port=self.port, sim_port=self.sim_port, node_url=self.node_url,
            wallet_key="0x" + secrets.token_hex(32), directory={"agent": wallet},
            rules=[{"name": "support", "proxy": SUPPORT, "channels": ["sms"],
                    "mode": "fixed", "wallets": ["agent"], **(rule or {})}])
        config["server"]["log_level"] = "WARNING"
        config["twilio"].update(twilio or {})
        config["xmtp"].update(xmtp or {})
        (self.tmp / "gw.yaml").write_text(yaml.safe_dump(config))
        self.gateway.start()
        await wait_for_port(self.gateway, self.port, within=60)
        if ready:
            await self._ready()

    async def _ready(self) -> None:
        deadline = time.monotonic() + WAIT
        async with aiohttp.ClientSession() as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{self.port}/readyz") as answer:
                        if answer.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"gateway not ready:\n{self.gateway.output()}")
                await asyncio.sleep(0.2)

    async def webhook_post(self, session: aiohttp.ClientSession, from_: str, body: str,
                           media_url: str | None = None) -> float:
        """Posts a signed inbound text (with one photo at ``media_url``) to the gateway;
        returns the HTTP round trip."""
        sid = ("MM" if media_url else "SM") + secrets.token_hex(16)
        form = {"MessageSid": sid, "SmsMessageSid": sid, "SmsSid": sid,
                "AccountSid": ACCOUNT_SID, "From": from_, "To": SUPPORT, "Body": body,
                "NumMedia": "1" if media_url else "0", "NumSegments": "1",
                "SmsStatus": "received", "ApiVersion": "2010-04-01"}
        if media_url:
            form |= {"MediaUrl0": media_url, "MediaContentType0": "image/jpeg"}
        headers = {"X-Twilio-Signature": self.validator.compute_signature(self.webhook, form)}
        started = time.monotonic()
        async with session.post(self.webhook, data=form, headers=headers) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"webhook answered {response.status}")
        return time.monotonic() - started


async def watch_stream(client: XmtpClient, thread: LoopThread, main: asyncio.AbstractEventLoop,
                       wanted: Callable[[XmtpMessage], bool],
                       arrived: Callable[[float, XmtpMessage], None]) -> None:
    """Streams ``client``'s messages on its own ``thread``; each one from someone else
    that is ``wanted`` is handed to ``arrived`` on ``main`` with the moment it came."""
    ready: asyncio.Future[None] = main.create_future()

    async def pump() -> None:
        stream = await client.stream_all_messages()
        main.call_soon_threadsafe(ready.set_result, None)
        async with stream:
            async for message in stream:
                now = time.monotonic()
                if message.sender_inbox_id != client.inbox_id and wanted(message):
                    main.call_soon_threadsafe(arrived, now, message)

    thread.submit(pump())
    await ready


async def run_reported(prefix: str, bench: Callable[[Path], Awaitable[dict[str, Any]]],
                       report: Callable[[dict[str, Any]], str], json_path: Path | None, *,
                       keep_log: Path | None = None) -> int:
    """Runs ``bench`` in a fresh directory and prints its ``report`` (and writes its
    figures to ``json_path``); when it fails, the end of the gateway's log goes to
    stderr. ``keep_log``: where to copy the gateway's whole log."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        log = Path(tmp) / "gateway.log"
        try:
            results = await bench(Path(tmp))
        except BaseException:
            if log.exists():
                print(log.read_text()[-4000:], file=sys.stderr)
            raise
        finally:
            if keep_log is not None and log.exists():
                await asyncio.to_thread(shutil.copyfile, log, keep_log)
    results["cpus"] = os.cpu_count()
    print(report(results))
    if json_path:
        await asyncio.to_thread(json_path.write_text, json.dumps(results, indent=2))
    return 0


def summary(seconds: list[float], digits: int = 1) -> dict[str, float]:
    """p50, p99 and mean in milliseconds, and how many."""
    ms = sorted(s * 1000 for s in seconds)
    return {"p50": round(statistics.median(ms), digits),
            "p99": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], digits),
            "mean": round(statistics.fmean(ms), digits), "n": len(ms)}
