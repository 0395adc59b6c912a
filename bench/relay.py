"""What the gateway adds to XMTP: relay latency and throughput next to the native floor.

Processes, as deployed: a devnode, the Twilio simulator and ``gateway serve`` (SQLite),
each its own ``python -m gateway …``. In this process: the wallet (a libxmtp client, on
its own thread and loop) and, for the floor, two more libxmtp clients (each on its own
thread) talking directly through the same devnode. Webhooks are posted from the main
loop, which runs no libxmtp code.

Measured in one run (``--messages`` each). The three latency series send one message at
a time, each after the previous one arrived and a pause of ``--pause-ms`` (default 30):
the same traffic for the floor and the gateway, and each message finds both idle (a
libxmtp send keeps working for some milliseconds after the peer has the message;
back to back, the gateway's next message would queue behind that tail, while the
floor's sender, which awaits its whole send, never shows it).

- phone → wallet latency: signed webhook posted → the wallet's stream yields the text;
- wallet → phone latency: the wallet's ``send_text`` starts → the simulator accepts the
  gateway's Messages API call (the simulator's own timestamp);
- native floor: ``send_text`` start → the peer's stream yields it;
- throughput over ``--conversations`` conversations: relayed (webhooks → wallet has them
  all) against native (one client sends into as many groups → the peer has them all),
  and wallet → phones;
- the loop's lag while libxmtp sends: the client on the caller's loop against the
  gateway's ``XmtpChatNetwork`` (its client on a thread of its own);
- webhook ingest latency (the HTTP round trip of each webhook): one at a time; with 8
  phones texting as fast as the gateway answers (saturation); and a phone texting 20
  times a second while the wallet's messages are relayed flat out;
- CPU per relayed message each way: the ``gateway serve`` process's user + system time
  (/proc) over each latency series, less what it spends idle over the series' pauses;
  and the native floor's: this process (both native clients) plus the devnode.

    python bench/relay.py [--messages 200] [--conversations 8] [--pause-ms 30]
                          [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack import WAIT, Stack, run_reported, watch_stream
from bench.stack import summary as _summary
from gateway.xmtp.client import Conversation, XmtpClient
from gateway.xmtp.loop_thread import LoopThread


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_thread(pid: int) -> Counter[str]:
    """CPU seconds per kind of thread of a process so far (threads named alike, digits
    aside, counted together: libxmtp's tokio workers, asyncio's executor, …)."""
    found: Counter[str] = Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        kind = re.sub(r"[-_ ]?\d+$", "", name) or name
        if task.name == str(pid):
            kind = "main thread"
        elif kind == "python":
            kind = "other Python threads"  # the XMTP thread's loop, executors
        elif name.startswith("async-compat"):
            kind = "libxmtp runtime"  # tokio, under pyo3's async bridge
        found[kind] += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


def phone(i: int) -> str:
    return f"+1555200{i:04d}"


def group_name(i: int) -> str:
    return f"SMS · +1 555-200-{i:04d} → +1 555-010-0001"


@dataclass
class Receiver:
    """A libxmtp client's stream, timestamped on its own thread the moment it yields."""

    client: XmtpClient
    thread: LoopThread
    main: asyncio.AbstractEventLoop
    arrived: dict[str, float] = field(default_factory=dict)
    waiters: dict[str, asyncio.Future[float]] = field(default_factory=dict)

    async def start(self) -> None:
        await watch_stream(self.client, self.thread, self.main,
                           lambda message: message.text is not None,
                           lambda at, message: self._arrived(message.text or "", at))

    def _arrived(self, text: str, at: float) -> None:
        self.arrived[text] = at
        waiter = self.waiters.pop(text, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(at)

    async def wait_for(self, text: str) -> float:
        if text in self.arrived:
            return self.arrived[text]
        waiter = self.waiters.setdefault(text, self.main.create_future())
        return await asyncio.wait_for(waiter, WAIT)

    async def wait_for_all(self, texts: list[str]) -> float:
        """The time the last of ``texts`` arrived."""
        return max([await self.wait_for(t) for t in texts])


class Bench(Stack):
    def __init__(self, tmp: Path, messages: int, conversations: int,
                 pause_ms: float = 30.0) -> None:
        super().__init__(tmp)
        self.n = messages
        self.k = conversations
        self.pause = pause_ms / 1000
        self.results: dict[str, Any] = {}

    # ---- phone side ---------------------------------------------------------------------

    async def sim_accepted_at(self, session: aiohttp.ClientSession, to: str,
                              body: str) -> float:
        """Wall-clock time the simulator accepted the send of ``body`` to ``to``."""
        deadline = time.monotonic() + WAIT
        count = 1
        while time.monotonic() < deadline:
            params = {"phone": to, "count": str(count), "timeout": "10"}
            async with session.get(self.sim_url + "/_sim/inbox", params=params) as response:
                data = await response.json()
            for text in data["messages"]:
                if text["body"].endswith(body):
                    return datetime.fromisoformat(text["at"]).timestamp()
            count = len(data["messages"]) + 1
        raise TimeoutError(f"the simulator never got {body!r}")

    # ---- the run ------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        threads = [LoopThread(f"bench-xmtp-{i}") for i in range(3)]
        wallet_thread, native_sender_thread, native_receiver_thread = threads
        try:
            async with self.processes(), aiohttp.ClientSession() as session:
                wallet = await self.on(wallet_thread, XmtpClient.create(
                    node_url=self.node_url, private_key=secrets.token_bytes(32)))
                await self.start_gateway(wallet.address)
                receiver = Receiver(wallet, wallet_thread, self.main)
                await receiver.start()
                groups = await self.open_conversations(session, wallet, wallet_thread,
                                                       receiver)
                # what the gateway spends doing nothing (its polls, its heartbeat), once
                # settled, is taken off the series' pauses
                await asyncio.sleep(2.0)
                cpu = self.gateway_cpu()
                await asyncio.sleep(3.0)
                self.idle_cpu_per_second = (self.gateway_cpu() - cpu) / 3.0
                await self.relay_latency(session, receiver, wallet_thread, groups[0])

                # The floor pairs the same two kinds of client as the relay: a sender like
                # the gateway's (an encrypted database on disk, which a gateway must keep)
                # and a receiver like the wallet (in memory).
                sender = await self.on(native_sender_thread, XmtpClient.create(
                    node_url=self.node_url, private_key=secrets.token_bytes(32),
                    db_path=str(self.tmp / "native-sender.db3"),
                    encryption_key=secrets.token_bytes(32)))
                peer = await self.on(native_receiver_thread, XmtpClient.create(
                    node_url=self.node_url, private_key=secrets.token_bytes(32)))
                peer_receiver = Receiver(peer, native_receiver_thread, self.main)
                await peer_receiver.start()
                await self.native(sender, native_sender_thread, peer, peer_receiver)

                await self.loop_lag(peer.address)
                await self.relay_throughput(session, receiver)
                await self.wallet_throughput(session, wallet_thread, groups)
        finally:
            for thread in threads:
                thread.stop()
        return self.results

    async def open_conversations(self, session: aiohttp.ClientSession, wallet: XmtpClient,
                                 thread: LoopThread, receiver: Receiver) -> list[Conversation]:
        """One conversation per phone, opened by a first text (its group gets created)."""
        for i in range(self.k):
            await self.webhook_post(session, phone(i), f"open {i}")
        await receiver.wait_for_all([f"open {i}" for i in range(self.k)])

        async def find() -> list[Conversation]:
            await wallet.sync_welcomes()
            by_name = {c.name: c for c in wallet.conversations()}
            return [by_name[group_name(i)] for i in range(self.k)]

        return await self.on(thread, find())

    def idle_cpu(self, seconds: float) -> float:
        """The gateway's CPU over ``seconds`` of doing nothing (its polls, its stream),
        as measured when it started: subtracted where a series ends with a wait."""
        return self.idle_cpu_per_second * seconds

    def gateway_cpu(self) -> float:
        assert self.gateway.proc is not None
        return cpu_seconds(self.gateway.proc.pid)

    def gateway_threads(self) -> Counter[str]:
        assert self.gateway.proc is not None
        return cpu_by_thread(self.gateway.proc.pid)

    def per_message(self, before: Counter[str]) -> dict[str, float]:
        """Each kind of the gateway's threads: its CPU ms per message since ``before``
        (idle included), the busiest first."""
        spent = self.gateway_threads()
        spent.subtract(before)
        return {kind: round(seconds / self.n * 1000, 2)
                for kind, seconds in spent.most_common() if seconds > 0}

    async def relay_latency(self, session: aiohttp.ClientSession, receiver: Receiver,
                            thread: LoopThread, group: Conversation) -> None:
        inbound, ingest = [], []
        cpu = self.gateway_cpu()
        threads = self.gateway_threads()
        for i in range(self.n):
            text = f"in-lat {i}"
            started = time.monotonic()
            ingest.append(await self.webhook_post(session, phone(0), text))
            inbound.append(await receiver.wait_for(text) - started)
            await asyncio.sleep(self.pause)
        self.results["phone_to_wallet_latency_ms"] = summary(inbound)
        self.results["webhook_ingest_idle_ms"] = summary(ingest)
        self.results["gateway_cpu_ms_per_message_phone_to_wallet"] = round(
            (self.gateway_cpu() - cpu - self.idle_cpu(self.pause * self.n)) / self.n * 1000, 2)
        self.results["gateway_cpu_by_thread_phone_to_wallet"] = self.per_message(threads)

        outbound = []
        cpu = self.gateway_cpu()
        threads = self.gateway_threads()
        for i in range(self.n):
            text = f"out-lat {i}"

            async def send(text: str = text) -> float:
                started = time.time()
                await group.send_text(text)
                return started

            started = await self.on(thread, send())
            outbound.append(await self.sim_accepted_at(session, phone(0), text) - started)
            await asyncio.sleep(self.pause)
        # status callbacks of the last sends may still come in: let them, then count
        await asyncio.sleep(1.0)
        self.results["wallet_to_phone_latency_ms"] = summary(outbound)
        self.results["gateway_cpu_ms_per_message_wallet_to_phone"] = round(
            (self.gateway_cpu() - cpu - self.idle_cpu(1.0 + self.pause * self.n))
            / self.n * 1000, 2)
        self.results["gateway_cpu_by_thread_wallet_to_phone"] = self.per_message(threads)

    async def native(self, sender: XmtpClient, sender_thread: LoopThread, peer: XmtpClient,
                     peer_receiver: Receiver) -> None:
        async def make_groups() -> list[Conversation]:
            return [await sender.new_group([peer.address], name=f"native {i}")
                    for i in range(self.k)]

        groups = await self.on(sender_thread, make_groups())
        latencies = []
        assert self.devnode.proc is not None
        node = self.devnode.proc.pid
        cpu = time.process_time() + cpu_seconds(node)  # both clients, and the node
        for i in range(self.n):
            text = f"native-lat {i}"

            async def send(text: str = text) -> float:
                started = time.monotonic()
                await groups[0].send_text(text)
                return started

            started = await self.on(sender_thread, send())
            latencies.append(await peer_receiver.wait_for(text) - started)
            await asyncio.sleep(self.pause)
        self.results["native_latency_ms"] = summary(latencies)
        self.results["native_cpu_ms_per_message"] = round(
            (time.process_time() + cpu_seconds(node) - cpu) / self.n * 1000, 2)

        texts = [f"native-tp {i}" for i in range(self.n)]

        async def blast() -> float:
            started = time.monotonic()
            await asyncio.gather(*(
                _sequential(groups[g], texts[g::self.k]) for g in range(self.k)))
            return started

        started = await self.on(sender_thread, blast())
        done = await peer_receiver.wait_for_all(texts)
        self.results["native_throughput_msg_s"] = round(self.n / (done - started), 1)

    async def loop_lag(self, peer: str) -> None:
        """How long the calling loop stalls while libxmtp sends: with the client on that
        loop, and with the gateway's ``XmtpChatNetwork`` (the client on its own thread).
        Both with encrypted file databases, as the gateway runs."""
        from gateway.domain.ids import WalletAddress
        from gateway.xmtp.network import XmtpChatNetwork

        inline = await XmtpClient.create(
            node_url=self.node_url, private_key=secrets.token_bytes(32),
            db_path=str(self.tmp / "inline.db3"), encryption_key=bytes(32))
        network = await XmtpChatNetwork.open(
            node_url=self.node_url, private_key="0x" + secrets.token_hex(32),
            db_path=self.tmp / "threaded.db3", encryption_key=bytes(32))
        try:
            group = await inline.new_group([peer])
            group_id = await network.create_group(name="lag", members=[WalletAddress(peer)])

            async def on_the_loop() -> None:
                for i in range(100):
                    await group.send_text(f"lag-a {i}")

            async def on_its_thread() -> None:
                for i in range(100):
                    await network.send(group_id, f"lag-b {i}", key=f"lag-b {i}")

            self.results["loop_lag_libxmtp_on_loop_ms"] = await _lag_during(on_the_loop)
            self.results["loop_lag_libxmtp_on_thread_ms"] = await _lag_during(on_its_thread)
        finally:
            await network.close()
            inline.close()

    async def relay_throughput(self, session: aiohttp.ClientSession,
                               receiver: Receiver) -> None:
        """Webhooks spread over the conversations as fast as the gateway takes them; the
        relay is flat out while each webhook's round trip is timed."""
        texts = [f"in-tp {i}" for i in range(self.n)]
        ingest: list[float] = []

        async def phone_lane(g: int) -> None:
            for text in texts[g::self.k]:
                ingest.append(await self.webhook_post(session, phone(g), text))

        started = time.monotonic()
        await asyncio.gather(*(phone_lane(g) for g in range(self.k)))
        done = await receiver.wait_for_all(texts)
        self.results["relay_throughput_msg_s"] = round(self.n / (done - started), 1)
        self.results["webhook_ingest_under_load_ms"] = summary(ingest)

    async def wallet_throughput(self, session: aiohttp.ClientSession, thread: LoopThread,
                                groups: list[Conversation]) -> None:
        texts = [f"out-tp {i}" for i in range(self.n)]

        async def blast() -> float:
            started = time.time()
            await asyncio.gather(*(
                _sequential(groups[g], texts[g::self.k]) for g in range(self.k)))
            return started

        probe: list[float] = []
        relaying = True

        async def probe_ingest() -> None:
            """A phone texting 20 times a second while the relay runs flat out."""
            i = 0
            while relaying:
                probe.append(await self.webhook_post(session, phone(1), f"probe {i}"))
                i += 1
                await asyncio.sleep(0.05)

        prober = asyncio.create_task(probe_ingest())
        try:
            started = await self.on(thread, blast())
            last = max([await self.sim_accepted_at(session, phone(i % self.k), text)
                        for i, text in enumerate(texts)])
        finally:
            relaying = False
            await prober
        self.results["wallet_to_phone_throughput_msg_s"] = round(self.n / (last - started), 1)
        self.results["webhook_ingest_probe_while_relaying_ms"] = summary(probe)


async def _sequential(group: Conversation, texts: list[str]) -> None:
    for text in texts:
        await group.send_text(text)


async def _lag_during(work: Callable[[], Awaitable[None]]) -> dict[str, float]:
    """The loop's lag (how late a 1 ms sleep wakes) while ``work`` runs on it."""
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    running = True

    async def watch() -> None:
        while running:
            before = loop.time()
            await asyncio.sleep(0.001)
            lags.append(max(0.0, loop.time() - before - 0.001))

    watcher = asyncio.create_task(watch())
    try:
        await work()
    finally:
        running = False
        await watcher
    result = summary(lags)
    result["max"] = round(max(lags) * 1000, 2)
    return result


def summary(seconds: list[float]) -> dict[str, float]:
    return _summary(seconds, digits=2)


def _threads(spent: dict[str, float]) -> str:
    return ", ".join(f"{kind} {ms}" for kind, ms in spent.items())


def report(results: dict[str, Any]) -> str:
    native, inbound = results["native_latency_ms"], results["phone_to_wallet_latency_ms"]
    outbound = results["wallet_to_phone_latency_ms"]
    lines = [
        f"{'':34}{'p50 ms':>9}{'p99 ms':>9}",
        *(f"{name:34}{r['p50']:>9}{r['p99']:>9}" for name, r in (
            ("native (client → client)", native),
            ("phone → wallet (webhook → stream)", inbound),
            ("wallet → phone (send → Twilio API)", outbound),
            ("webhook ingest, idle", results["webhook_ingest_idle_ms"]),
            ("webhook ingest, saturating (8 phones)", results["webhook_ingest_under_load_ms"]),
            ("webhook ingest, 20/s while relaying",
             results["webhook_ingest_probe_while_relaying_ms"]))),
        "",
        f"added at p50: phone → wallet {inbound['p50'] / native['p50'] - 1:+.0%}, "
        f"wallet → phone {outbound['p50'] / native['p50'] - 1:+.0%}",
        f"CPU per message, ms: the gateway process, phone → wallet "
        f"{results['gateway_cpu_ms_per_message_phone_to_wallet']}, wallet → phone "
        f"{results['gateway_cpu_ms_per_message_wallet_to_phone']}; the native floor (both "
        f"clients and the node) {results['native_cpu_ms_per_message']}",
        "  by the gateway's threads (idle included), phone → wallet: "
        + _threads(results["gateway_cpu_by_thread_phone_to_wallet"]),
        "  wallet → phone: " + _threads(results["gateway_cpu_by_thread_wallet_to_phone"]),
        f"loop lag during 100 sends, p99 / max ms: libxmtp on the loop "
        f"{results['loop_lag_libxmtp_on_loop_ms']['p99']} / "
        f"{results['loop_lag_libxmtp_on_loop_ms']['max']}, on its own thread (the gateway) "
        f"{results['loop_lag_libxmtp_on_thread_ms']['p99']} / "
        f"{results['loop_lag_libxmtp_on_thread_ms']['max']}",
        f"throughput: relayed {results['relay_throughput_msg_s']} msg/s, native "
        f"{results['native_throughput_msg_s']} msg/s "
        f"({results['relay_throughput_msg_s'] / results['native_throughput_msg_s']:.0%}); "
        f"wallet → phones {results['wallet_to_phone_throughput_msg_s']} msg/s",
    ]
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--pause-ms", type=float, default=30.0,
                        help="pause between the latency series' messages")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    return await run_reported(
        "bench-relay-", lambda tmp: Bench(tmp, args.messages, args.conversations,
                                          args.pause_ms).run(), report, args.json)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
