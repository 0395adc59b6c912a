"""Latency and cost of a message through the devnode, with two real libxmtp clients.

The devnode runs in its own process (``python -m gateway devnode``), the two clients in
this one. Measured side by side in one run:

- latency: ``send_text`` start -> the peer's ``stream_all_messages`` yields it, one
  message at a time (p50 / p99 over ``--messages``);
- throughput: ``--messages`` sent back to back into one DM until the peer has them all;
- CPU: the devnode process's CPU seconds (from /proc/<pid>/stat) and this process's
  (both clients, from ``resource``) per message, hence the devnode's share of the work.

    python bench/devnode_latency.py [--messages 200] [--client-db memory|file]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

# tests/ports.py: the repository root
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.xmtp.client import MessageStream, XmtpClient
from gateway.xmtp.devnode.proto_gen import mls_api_pb2, mls_api_pb2_grpc
from tests.ports import free_port

os.environ.setdefault("RUST_LOG", "error")  # libxmtp reads it when the first client starts
REPO = Path(__file__).resolve().parent.parent

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (fields 14 and 15 of its stat line)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.asynccontextmanager
async def devnode_process(rpc_log: list[str] | None) -> AsyncIterator[tuple[str, int]]:
    """The devnode in its own process; with ``rpc_log`` it logs every RPC (debug level)
    and the lines are appended there as they come."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "devnode", "--port", str(port), "--db", ":memory:",
        "--log-level", "debug" if rpc_log is not None else "warning",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE if rpc_log is not None else None, cwd=REPO)

    async def collect() -> None:
        assert process.stderr is not None and rpc_log is not None
        async for line in process.stderr:
            rpc_log.append(line.decode())

    collecting = asyncio.create_task(collect()) if rpc_log is not None else None
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("devnode did not start")
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 10)
        if collecting is not None:
            await collecting


_RPC_LINE = re.compile(r"rpc (\w+) ok ([0-9.]+)ms")


def rpc_mix(lines: list[str], messages: int) -> dict[str, dict[str, float]]:
    """Per method: calls per message and mean time inside the devnode's handler."""
    times: dict[str, list[float]] = {}
    for line in lines:
        match = _RPC_LINE.search(line)
        if match:
            times.setdefault(match[1], []).append(float(match[2]))
    return {method: {"calls_per_msg": round(len(t) / messages, 2),
                     "handler_ms": round(statistics.mean(t), 3)}
            for method, t in sorted(times.items())}


@dataclass
class Result:
    messages: int
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    throughput_msg_per_s: float
    devnode_cpu_ms_per_msg: float
    clients_cpu_ms_per_msg: float
    devnode_share_of_cpu: float
    devnode_cpu_share_of_p50_latency: float
    bare_grpc_round_trip_p50_ms: float
    rpc_mix: dict[str, dict[str, float]] | None


class Receiver:
    """Records when each text first comes out of the peer's stream."""

    def __init__(self, stream: MessageStream) -> None:
        self.arrived: dict[str, float] = {}
        self._stream = stream
        self._new = asyncio.Event()

    async def run(self) -> None:
        async for message in self._stream:
            if message.text is not None and message.text not in self.arrived:
                self.arrived[message.text] = time.perf_counter()
                self._new.set()

    async def wait_for(self, texts: list[str], within: float = 60.0) -> None:
        async with asyncio.timeout(within):
            while not all(t in self.arrived for t in texts):
                self._new.clear()
                await self._new.wait()


async def bench(messages: int, client_db: str, rpc_times: bool) -> Result:
    rpc_log: list[str] | None = [] if rpc_times else None
    async with devnode_process(rpc_log) as (url, pid):
        with tempfile.TemporaryDirectory() as tmp:
            def db(name: str) -> dict[str, object]:
                if client_db == "memory":
                    return {}
                return {"db_path": f"{tmp}/{name}.db3", "encryption_key": secrets.token_bytes(32)}

            alice = await XmtpClient.create(node_url=url, private_key=secrets.token_bytes(32),
                                            **db("alice"))  # type: ignore[arg-type]
            bob = await XmtpClient.create(node_url=url, private_key=secrets.token_bytes(32),
                                          **db("bob"))  # type: ignore[arg-type]
            dm = await alice.new_dm(bob.address)
            await dm.send_text("warm-up 0")
            await bob.sync_all()
            async with await bob.stream_all_messages() as stream:
                receiver = Receiver(stream)
                reading = asyncio.create_task(receiver.run())
                for i in range(1, 11):
                    await dm.send_text(f"warm-up {i}")
                await receiver.wait_for([f"warm-up {i}" for i in range(1, 11)])

                await asyncio.sleep(0.1)  # let the warm-up's log lines arrive
                node_cpu, own_cpu = process_cpu_seconds(pid), own_cpu_seconds()
                log_start = len(rpc_log or [])
                latencies = []
                for i in range(messages):
                    text = f"latency {i}"
                    started = time.perf_counter()
                    await dm.send_text(text)
                    await receiver.wait_for([text])
                    latencies.append((receiver.arrived[text] - started) * 1000)
                await asyncio.sleep(0.1)
                latency_log = (rpc_log or [])[log_start:]

                started = time.perf_counter()
                burst = [f"burst {i}" for i in range(messages)]
                for text in burst:
                    await dm.send_text(text)
                await receiver.wait_for(burst)
                burst_seconds = time.perf_counter() - started
                node_cpu = process_cpu_seconds(pid) - node_cpu
                own_cpu = own_cpu_seconds() - own_cpu
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading
            round_trip = await bare_round_trip_ms(url, bytes.fromhex(dm.id), messages)

    total = 2 * messages
    quantiles = statistics.quantiles(latencies, n=100)
    p50 = statistics.median(latencies)
    node_ms, clients_ms = node_cpu / total * 1000, own_cpu / total * 1000
    return Result(
        messages=messages, latency_p50_ms=round(p50, 2), latency_p99_ms=round(quantiles[98], 2),
        latency_max_ms=round(max(latencies), 2),
        throughput_msg_per_s=round(messages / burst_seconds, 1),
        devnode_cpu_ms_per_msg=round(node_ms, 3), clients_cpu_ms_per_msg=round(clients_ms, 3),
        devnode_share_of_cpu=round(node_ms / (node_ms + clients_ms), 3),
        devnode_cpu_share_of_p50_latency=round(node_ms / p50, 3),
        bare_grpc_round_trip_p50_ms=round(round_trip, 3),
        rpc_mix=rpc_mix(latency_log, messages) if rpc_times else None)


async def bare_round_trip_ms(url: str, group_id: bytes, calls: int) -> float:
    """One small unary call from a Python gRPC client to the devnode: the cost of a hop."""
    async with grpc.aio.insecure_channel(url.removeprefix("http://")) as channel:
        api = mls_api_pb2_grpc.MlsApiStub(channel)
        request = mls_api_pb2.GetNewestGroupMessageRequest(group_ids=[group_id])
        timings = []
        for _ in range(calls):
            started = time.perf_counter()
            await api.GetNewestGroupMessage(request)
            timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--client-db", choices=["memory", "file"], default="memory")
    parser.add_argument("--rpc-times", action="store_true",
                        help="run the devnode at debug level and report its RPCs per message "
                             "and handler times (logging adds to the devnode's CPU figures)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    result = asyncio.run(bench(args.messages, args.client_db, args.rpc_times))
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        for key, value in asdict(result).items():
            print(f"{key:34} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
