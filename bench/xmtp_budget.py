"""XMTP's write budget under a load twice its size: sustained relay throughput against
the budget, the node's refusals, and texts lost or doubled.

Processes, as deployed: a devnode enforcing XMTP's per-client write limit scaled down
(``--writes`` per rolling ``--window`` seconds; the network: 3,000 per 300 s), the
Twilio simulator and ``gateway serve`` (SQLite) with ``xmtp.write_budget`` set to the
same limit (its default headroom, 5%). In this process: the wallet (a libxmtp client on
its own thread) that every conversation's group holds, its stream timestamped as it
yields.

The run: ``--conversations`` phones each open a conversation (its group made at the
first text) and the window is let to empty. Then the phones text, round robin, at
``--load`` times the budget (writes / window per second) for ``--windows`` windows;
then the backlog drains.

- sustained throughput: texts the wallet received between the end of the first window
  of the load and the end of the load, per second (the first window is left out: a
  rolling window lets a burst of its whole size through at once), against the budget
  (target: at least 0.9; the headroom alone keeps it at or below 0.95);
- refusals: the node's RESOURCE_EXHAUSTED answers to any client (its log) and the
  gateway's ``gateway_xmtp_rate_limited_total`` (target: 0);
- lost and doubled: after the drain, each group's texts as the wallet has them, against
  what its phone sent, in order (target: 0 and 0, in order);
- failed deliveries (``gateway_deliveries_total{state="failed"}``).

One gateway identity (K = 1).

    python bench/xmtp_budget.py [--writes 300] [--window 30] [--load 2] [--windows 3]
                                [--conversations 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack import Stack, run_reported
from gateway.xmtp.client import XmtpClient
from gateway.xmtp.loop_thread import LoopThread

WAIT = 120.0  # any single wait in the benchmark


def phone(i: int) -> str:
    return f"+1555200{i:04d}"


def group_name(i: int) -> str:
    return f"SMS · +1 555-200-{i:04d} → +1 555-010-0001"


class Arrivals:
    """The wallet's stream, each text timestamped on the wallet's thread as it yields."""

    def __init__(self, client: XmtpClient, thread: LoopThread) -> None:
        self.client = client
        self.thread = thread
        self.main = asyncio.get_running_loop()
        self.times: list[tuple[float, str]] = []

    async def start(self) -> None:
        ready: asyncio.Future[None] = self.main.create_future()
        self.thread.submit(self._pump(ready))
        await ready

    async def _pump(self, ready: asyncio.Future[None]) -> None:
        stream = await self.client.stream_all_messages()
        self.main.call_soon_threadsafe(ready.set_result, None)
        async with stream:
            async for message in stream:
                now = time.monotonic()
                if message.text is not None and message.sender_inbox_id != self.client.inbox_id:
                    self.main.call_soon_threadsafe(self.times.append, (now, message.text))

    def received(self, prefix: str) -> int:
        return sum(1 for _, text in self.times if text.startswith(prefix))

    async def wait_for(self, prefix: str, count: int, within: float) -> None:
        deadline = time.monotonic() + within
        while self.received(prefix) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.received(prefix)} of {count} {prefix!r} texts "
                                   f"arrived in {within:.0f}s")
            await asyncio.sleep(0.2)


class Bench(Stack):
    def __init__(self, tmp: Path, args: argparse.Namespace) -> None:
        super().__init__(tmp)
        self.writes: int = args.writes
        self.window: float = args.window
        self.load: float = args.load
        self.windows: int = args.windows
        self.conversations: int = args.conversations
        self.budget_rate = self.writes / self.window  # writes per second the node allows
        # INFO: the devnode logs each refusal ("rpc … rate limited") and nothing per call
        self.devnode_options = ("--log-level", "INFO", "--max-writes", str(self.writes),
                                "--rate-window", str(self.window))
        self.results: dict[str, Any] = {
            "writes": self.writes, "window_s": self.window, "load": self.load,
            "windows": self.windows, "conversations": self.conversations, "identities": 1}

    async def text(self, session: aiohttp.ClientSession, from_: str, body: str) -> None:
        """A signed inbound text, as Twilio posts it."""
        await self.webhook_post(session, from_, body)

    async def metric(self, session: aiohttp.ClientSession, name: str,
                     **labels: str) -> float:
        async with session.get(f"http://127.0.0.1:{self.port}/metrics") as response:
            text = await response.text()
        wanted = [f'{key}="{value}"' for key, value in labels.items()]
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and all(w in line for w in wanted))

    async def run(self) -> dict[str, Any]:
        thread = LoopThread("bench-wallet")
        try:
            async with self.processes(), aiohttp.ClientSession() as session:
                wallet = await thread.run(XmtpClient.create(
                    node_url=self.node_url, private_key=secrets.token_bytes(32)))
                # RUST_LOG=error: libxmtp's refusals reach the gateway's metric
                await self.start_gateway(
                    wallet.address, twilio={"rate_limits": {"default_per_second": 100000.0}},
                    xmtp={"write_budget": {"writes": self.writes,
                                           "window_seconds": self.window}}, ready=True)
                arrivals = Arrivals(wallet, thread)
                await arrivals.start()
                await self.open_conversations(session, arrivals)
                await asyncio.sleep(self.window)  # the window empties
                offered = await self.offer(session, arrivals)
                await arrivals.wait_for("load ", sum(len(t) for t in offered.values()),
                                        within=WAIT + self.load * self.windows * self.window)
                await asyncio.sleep(2.0)  # anything doubled arrives too
                await self.count(session, wallet, thread, offered)
        finally:
            thread.stop()
        return self.results

    async def open_conversations(self, session: aiohttp.ClientSession,
                                 arrivals: Arrivals) -> None:
        for i in range(self.conversations):
            await self.text(session, phone(i), f"open {i}")
        await arrivals.wait_for("open ", self.conversations, within=WAIT)

    async def offer(self, session: aiohttp.ClientSession,
                    arrivals: Arrivals) -> dict[int, list[str]]:
        """Texts at ``load`` times the budget for ``windows`` windows, round robin over
        the phones, each on schedule; a phone's next text waits for the gateway's answer
        to its previous one (as Twilio posts one sender's texts), so the order a phone
        sent them in is the order the gateway recorded them in."""
        rate = self.load * self.budget_rate
        total = round(rate * self.window * self.windows)
        offered: dict[int, list[str]] = {i: [] for i in range(self.conversations)}
        answers: list[float] = []  # each webhook's round trip
        began = time.monotonic()

        async def texts(i: int) -> None:
            for n in range(i, total, self.conversations):
                delay = began + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                body = f"load {i} {len(offered[i])}"
                offered[i].append(body)
                started = time.monotonic()
                await self.text(session, phone(i), body)
                answers.append(time.monotonic() - started)

        await asyncio.gather(*(texts(i) for i in range(self.conversations)))
        ended = time.monotonic()
        steady_from = began + self.window
        steady = sum(1 for at, text in arrivals.times
                     if text.startswith("load ") and steady_from <= at <= ended)
        throughput = steady / (ended - steady_from)
        self.results.update({
            "offered": total, "offered_per_s": round(total / (ended - began), 2),
            "budget_per_s": round(self.budget_rate, 2),
            "sustained_per_s": round(throughput, 2),
            "sustained_over_budget": round(throughput / self.budget_rate, 3),
            "received_during_load": sum(1 for at, text in arrivals.times
                                        if text.startswith("load ") and at <= ended),
            "webhook_p50_ms": round(statistics.median(answers) * 1000, 1),
            "webhook_max_ms": round(max(answers) * 1000, 1)})
        return offered

    async def count(self, session: aiohttp.ClientSession, wallet: XmtpClient,
                    thread: LoopThread, offered: dict[int, list[str]]) -> None:
        async def groups() -> dict[str, list[str]]:
            await wallet.sync_all()
            found = {}
            for conversation in wallet.conversations():
                if not conversation.is_dm:
                    found[conversation.name] = [
                        m.text or "" for m in await conversation.messages()
                        if m.text is not None and m.sender_inbox_id != wallet.inbox_id]
            return found

        held = await thread.run(groups())
        lost = doubled = out_of_order = 0
        for i, sent in offered.items():
            texts = [t for t in held.get(group_name(i), []) if t.startswith("load ")]
            copies = Counter(texts)
            lost += sum(1 for body in sent if copies[body] == 0)
            doubled += sum(copies[body] - 1 for body in sent if copies[body] > 1)
            firsts = list(dict.fromkeys(texts))
            expected = [body for body in sent if body in copies]
            if firsts != expected:
                out_of_order += 1
                at = next(n for n, (a, b) in enumerate(zip(firsts, expected, strict=True))
                          if a != b)
                self.results.setdefault("out_of_order_examples", []).append(
                    {"group": i, "at": at, "held": firsts[max(at - 2, 0):at + 3],
                     "sent": expected[max(at - 2, 0):at + 3]})
        self.results.update({
            "lost": lost, "doubled": doubled, "groups_out_of_order": out_of_order,
            "node_refusals": self.devnode.log_path.read_text().count("rate limited"),
            "gateway_rate_limited": await self.metric(
                session, "gateway_xmtp_rate_limited_total"),
            "writes_delayed": await self.metric(session, "gateway_xmtp_writes_delayed_total"),
            "failed_deliveries": await self.metric(session, "gateway_deliveries_total",
                                                   state="failed"),
        })


def report(r: dict[str, Any]) -> str:
    return "\n".join([
        f"budget {r['writes']} writes / {r['window_s']:g} s = {r['budget_per_s']}/s "
        f"(headroom 5%), K = {r['identities']}, {r['conversations']} conversations",
        f"offered {r['offered']} texts at {r['offered_per_s']}/s "
        f"({r['load']:g}x the budget, {r['windows']} windows); webhook round trip p50 "
        f"{r['webhook_p50_ms']} ms, max {r['webhook_max_ms']} ms",
        f"sustained relay throughput {r['sustained_per_s']}/s = "
        f"{r['sustained_over_budget']:.3f} x budget (target >= 0.9)",
        f"refusals: node {r['node_refusals']}, gateway metric {r['gateway_rate_limited']:g} "
        f"(target 0); writes delayed {r['writes_delayed']:g}",
        f"lost {r['lost']}, doubled {r['doubled']}, groups out of order "
        f"{r['groups_out_of_order']}, failed deliveries {r['failed_deliveries']:g}",
    ])


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=300,
                        help="the node's write limit per window, and the gateway's budget")
    parser.add_argument("--window", type=float, default=30.0, help="seconds")
    parser.add_argument("--load", type=float, default=2.0,
                        help="texts offered per second, in budgets (writes / window)")
    parser.add_argument("--windows", type=int, default=3, help="how long the load lasts")
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    return await run_reported("bench-xmtp-budget-", lambda tmp: Bench(tmp, args).run(),
                              report, args.json)

if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
