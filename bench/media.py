"""What carrying a photo costs: a 1 MB image each way, end to end, against the floor of
doing the same work with the same libraries in the same run; and whether the webhook
notices.

Processes, as deployed (as bench/relay.py): a devnode, the Twilio simulator and ``gateway
serve`` (SQLite, the local blob store), each its own ``python -m gateway …``. In this
process: the wallet (a libxmtp client on its own thread and loop), a peer for the
native send, and a file server on 127.0.0.1 where the wallet's remote attachments live.

- phone → wallet: the signed webhook (MediaUrl0 = the simulator's URL for the photo,
  behind the account's credentials) is posted → the wallet's stream yields the remote
  attachment; and → the wallet holds the bytes (fetched from the gateway's URL and
  decrypted, as its app would).
- wallet → phone: the wallet's send of the remote attachment starts (its own encrypt
  and upload done before) → the simulator has fetched the photo from the gateway's
  MediaUrl and delivered it to the phone.
- the floor, per photo, in this process with the gateway's own code: phone → wallet
  fetch (the simulator's URL with the credentials, its redirect) + encrypt (XMTP's
  scheme) + upload (a local blob store) + sign; wallet → phone fetch (the file server)
  + digest check and decrypt + store + sign; and a native XMTP send of a remote
  attachment's envelope (libxmtp client → peer's stream). Floor = the media work + the
  native send.
- the webhook's round trip (a text, no media, 20 a second, from a thread of its own):
  idle; while photos relay both ways at ``--rate`` a second each way (hosted and sealed
  beforehand); and while they relay back to back, saturating the machine.

    python bench/media.py [--photos 40] [--size 1000000] [--rate 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack import WAIT, Stack, run_reported, summary, watch_stream
from gateway.media.attachments import (
    Attachment,
    decode_remote_attachment,
    decrypt_attachment,
    encode_remote_attachment,
    encrypt_attachment,
)
from gateway.media.fetch import FetchPolicy, MediaFetcher, twilio_credentials
from gateway.media.local_store import LocalBlobStore, MediaKeys
from gateway.media.transfer import download_attachment, publish_for_phone, upload_attachment
from gateway.xmtp.client import Conversation, XmtpClient, XmtpMessage
from gateway.xmtp.loop_thread import LoopThread
from tests.e2e.bridge.harness import ACCOUNT_SID, AUTH_TOKEN

PHONE = "+15552000001"
PROBE_PHONE = "+15552000002"
GROUP = "SMS · +1 555-200-0001 → +1 555-010-0001"
REMOTE = "xmtp.org/remoteStaticAttachment:"


def photo(size: int) -> bytes:
    """A JPEG-looking file of ``size`` bytes (random: nothing compresses it)."""
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + secrets.token_bytes(size - 11)


@dataclass
class Arrivals:
    """A libxmtp client's stream: each file message, timestamped on its thread."""

    client: XmtpClient
    thread: LoopThread
    main: asyncio.AbstractEventLoop
    queue: asyncio.Queue[tuple[float, XmtpMessage]] = field(default_factory=asyncio.Queue)

    async def start(self) -> None:
        await watch_stream(self.client, self.thread, self.main,
                           lambda message: message.content_type.startswith(REMOTE),
                           lambda at, message: self.queue.put_nowait((at, message)))

    async def next(self) -> tuple[float, XmtpMessage]:
        return await asyncio.wait_for(self.queue.get(), WAIT)


class Files:
    """The file server where the wallet's remote attachments live."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.base = ""

    def put(self, data: bytes) -> str:
        name = secrets.token_hex(8)
        self.files[name] = data
        return self.base + name

    async def serve(self, request: web.Request) -> web.Response:
        return web.Response(body=self.files[request.match_info["name"]],
                            content_type="application/octet-stream")


class Bench(Stack):
    def __init__(self, tmp: Path, photos: int, size: int, rate: float) -> None:
        super().__init__(tmp)
        self.n = photos
        self.size = size
        self.rate = rate
        self.results: dict[str, Any] = {"photos": photos, "bytes": size, "rate": rate}
        self.files = Files()
        self.inbox_count = 0

    # ---- the phone side -----------------------------------------------------------------

    async def host(self, session: aiohttp.ClientSession, data: bytes) -> str:
        """The photo at the simulator, as Twilio hosts a phone's media."""
        body = await asyncio.to_thread(lambda: json.dumps({
            "data_base64": base64.b64encode(data).decode(), "content_type": "image/jpeg"}))
        async with session.post(self.sim_url + "/_sim/media", data=body,
                                headers={"Content-Type": "application/json"}) as response:
            hosted: dict[str, str] = await response.json()
        return hosted["url"]

    async def phone_got_photo(self, session: aiohttp.ClientSession, *,
                              with_data: bool = True) -> tuple[float, bytes, float]:
        """When the next photo reached the phone (the simulator fetched it from the
        gateway's MediaUrl), its bytes, and the wall-clock time the simulator accepted
        the gateway's Messages API call."""
        self.inbox_count += 1
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            params = {"phone": PHONE, "count": str(self.inbox_count), "timeout": "20",
                      "since": str(self.inbox_count - 1), "data": "1" if with_data else "0"}
            async with session.get(self.sim_url + "/_sim/inbox", params=params) as response:
                data = await response.json()
            at = time.monotonic()
            texts = [t for t in data["messages"] if t["media"]]
            if data["total"] >= self.inbox_count and texts:
                accepted = datetime.fromisoformat(texts[-1]["at"]).timestamp()
                data_base64 = texts[-1]["media"][-1].get("data_base64", "")
                return at, base64.b64decode(data_base64), accepted
        raise TimeoutError("the phone never got the photo")

    # ---- the run ------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        wallet_thread, peer_thread = LoopThread("bench-wallet"), LoopThread("bench-peer")
        app = web.Application()
        app.router.add_get("/{name}", self.files.serve)
        try:
            async with self.processes(), aiohttp.ClientSession() as session, \
                    TestServer(app, host="127.0.0.1") as server:
                self.files.base = str(server.make_url("/"))
                wallet = await self.on(wallet_thread, XmtpClient.create(
                    node_url=self.node_url, private_key=secrets.token_bytes(32)))
                await self.start_gateway(
                    wallet.address, rule={"sender_label": ""},
                    twilio={"rate_limits": {"default_per_second": 100000.0}})
                arrivals = Arrivals(wallet, wallet_thread, self.main)
                await arrivals.start()
                group = await self.open(session, wallet, wallet_thread)
                self.results["webhook_idle_ms"] = summary(await self.idle_webhooks())

                # one photo each way first: the first of each (a new connection, the
                # worker threads started) is timed apart, as "cold"
                await self.phone_to_wallet(session, arrivals, count=1, name="cold_")
                await self.wallet_to_phone(session, wallet_thread, group, count=1,
                                           name="cold_")
                await self.phone_to_wallet(session, arrivals)
                await self.wallet_to_phone(session, wallet_thread, group)
                await self.floor(session, peer_thread, wallet.address, wallet_thread,
                                 arrivals)
                await self.webhook_while_relaying(session, arrivals, wallet_thread, group,
                                                  rate=self.rate, name="relaying_paced")
                await self.webhook_while_relaying(session, arrivals, wallet_thread, group,
                                                  rate=None, name="relaying_flat_out")
        finally:
            wallet_thread.stop()
            peer_thread.stop()
        return self.results

    async def idle_webhooks(self) -> list[float]:
        """The webhook's round trip with nothing else going on, timed from a thread of
        its own as the probe while relaying is."""
        async def post() -> list[float]:
            async with aiohttp.ClientSession() as own:
                found = []
                for i in range(200):
                    found.append(await self.webhook_post(own, PROBE_PHONE, f"idle {i}"))
                    await asyncio.sleep(0.05)
                return found

        thread = LoopThread("bench-probe")
        try:
            return await thread.run(post())
        finally:
            thread.stop()

    async def open(self, session: aiohttp.ClientSession, wallet: XmtpClient,
                   thread: LoopThread) -> Conversation:
        await self.webhook_post(session, PHONE, "hello")

        async def find() -> Conversation:
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                await wallet.sync_welcomes()
                for group in wallet.conversations():
                    if group.name == GROUP:
                        return group
                await asyncio.sleep(0.1)
            raise TimeoutError("the wallet never got the group")

        return await self.on(thread, find())

    async def phone_to_wallet(self, session: aiohttp.ClientSession, arrivals: Arrivals, *,
                              count: int | None = None, name: str = "") -> None:
        streamed, opened = [], []
        for _ in range(count or self.n):
            data = photo(self.size)
            url = await self.host(session, data)
            started = time.monotonic()
            await self.webhook_post(session, PHONE, "", media_url=url)
            at, message = await arrivals.next()
            streamed.append(at - started)
            got = await wallet_opens(session, message)
            opened.append(time.monotonic() - started)
            assert got == data, "the wallet got other bytes"
        self.results[f"{name}phone_to_wallet_stream_ms"] = summary(streamed)
        self.results[f"{name}phone_to_wallet_opened_ms"] = summary(opened)

    async def wallet_sends(self, thread: LoopThread, group: Conversation,
                           data: bytes) -> tuple[float, float]:
        """Seals and hosts the photo as the wallet's app would, then sends it; returns
        when the send started (monotonic, wall clock), the app's own encryption and
        upload done before it."""
        sealed = await asyncio.to_thread(encrypt_attachment,
                                         Attachment("photo.jpg", "image/jpeg", data))
        encoded = encode_remote_attachment(sealed.remote(self.files.put(sealed.payload)))

        async def send() -> tuple[float, float]:
            started = time.monotonic(), time.time()
            await group.send_encoded(encoded)
            return started

        return await self.on(thread, send())

    async def wallet_to_phone(self, session: aiohttp.ClientSession, thread: LoopThread,
                              group: Conversation, *, count: int | None = None,
                              name: str = "") -> None:
        latencies, to_api = [], []
        for _ in range(count or self.n):
            data = photo(self.size)
            started, started_wall = await self.wallet_sends(thread, group, data)
            at, got, accepted = await self.phone_got_photo(session)
            latencies.append(at - started)
            to_api.append(accepted - started_wall)
            assert got == data, "the phone got other bytes"
        self.results[f"{name}wallet_to_phone_ms"] = summary(latencies)
        self.results[f"{name}wallet_to_phone_api_call_ms"] = summary(to_api)

    async def floor(self, session: aiohttp.ClientSession, peer_thread: LoopThread,
                    wallet_address: str, wallet_thread: LoopThread,
                    arrivals: Arrivals) -> None:
        """The same work, the same code, no gateway around it."""
        store = LocalBlobStore(self.tmp / "floor-media",
                               MediaKeys.derive({"k": secrets.token_bytes(32)}, "k"),
                               base_url="http://127.0.0.1:9")
        credentials = twilio_credentials(ACCOUNT_SID, AUTH_TOKEN, extra_origins=(self.sim_url,))
        inbound, outbound = [], []
        async with MediaFetcher(FetchPolicy(max_bytes=5_000_000, allow_insecure=True)) as fetch:
            for _ in range(self.n):
                data = photo(self.size)
                url = await self.host(session, data)
                started = time.monotonic()
                got = await fetch.fetch(url, credentials=credentials)
                await upload_attachment(store, Attachment("media-1.jpg", got.content_type,
                                                          got.data), ttl=timedelta(days=7))
                inbound.append(time.monotonic() - started)

                sealed = encrypt_attachment(Attachment("photo.jpg", "image/jpeg", data))
                remote = sealed.remote(self.files.put(sealed.payload))
                started = time.monotonic()
                opened = await download_attachment(fetch, remote, max_bytes=5_000_000)
                published = await publish_for_phone(store, opened, ttl=timedelta(hours=1))
                await store.get(published.key)  # as the media route serves it to Twilio
                outbound.append(time.monotonic() - started)
        self.results["floor_phone_to_wallet_media_ms"] = summary(inbound)
        self.results["floor_wallet_to_phone_media_ms"] = summary(outbound)

        # a remote attachment's envelope, client to client through the same devnode
        peer = await self.on(peer_thread, XmtpClient.create(
            node_url=self.node_url, private_key=secrets.token_bytes(32),
            db_path=str(self.tmp / "peer.db3"), encryption_key=secrets.token_bytes(32)))

        async def make_group() -> Conversation:
            return await peer.new_group([wallet_address], name="native")

        native_group = await self.on(peer_thread, make_group())
        sends = []
        for _ in range(self.n):
            sealed = encrypt_attachment(Attachment("photo.jpg", "image/jpeg", b"x"))
            encoded = encode_remote_attachment(sealed.remote(self.files.put(sealed.payload)))

            async def send(encoded: bytes = encoded) -> float:
                started = time.monotonic()
                await native_group.send_encoded(encoded)
                return started

            started = await self.on(peer_thread, send())
            at, _ = await arrivals.next()
            sends.append(at - started)
        self.results["native_envelope_send_ms"] = summary(sends)

    async def webhook_while_relaying(self, session: aiohttp.ClientSession,
                                     arrivals: Arrivals, thread: LoopThread,
                                     group: Conversation, *, rate: float | None,
                                     name: str) -> None:
        """A phone texting 20 times a second while photos relay both ways, ``rate`` a
        second each way (None: back to back, as fast as they go). The photos are hosted
        and sealed beforehand, so this process only posts, sends and waits meanwhile."""
        inbound_urls = [await self.host(session, photo(self.size)) for _ in range(self.n)]
        outbound = []
        for _ in range(self.n):
            sealed = await asyncio.to_thread(encrypt_attachment, Attachment(
                "photo.jpg", "image/jpeg", photo(self.size)))
            outbound.append(encode_remote_attachment(sealed.remote(
                self.files.put(sealed.payload))))
        probe: list[float] = []
        relaying = True

        async def probe_ingest() -> None:
            """On a thread and loop of its own, so what this process does meanwhile (its
            wallet, its file server) does not show in the probe's timings."""
            async with aiohttp.ClientSession() as own:
                i = 0
                while relaying:
                    probe.append(await self.webhook_post(own, PROBE_PHONE, f"probe {i}"))
                    i += 1
                    await asyncio.sleep(0.05)

        async def paced(i: int, started: float) -> None:
            if rate is not None:
                await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))

        async def phone_side(started: float) -> None:
            for i, url in enumerate(inbound_urls):
                await paced(i, started)
                await self.webhook_post(session, PHONE, "", media_url=url)
                await arrivals.next()

        async def wallet_side(started: float) -> None:
            for i, encoded in enumerate(outbound):
                await paced(i, started)

                async def send(encoded: bytes = encoded) -> None:
                    await group.send_encoded(encoded)

                await self.on(thread, send())
                await self.phone_got_photo(session, with_data=False)

        probe_thread = LoopThread("bench-probe")
        prober = asyncio.wrap_future(probe_thread.submit(probe_ingest()))
        started = time.monotonic()
        try:
            await asyncio.gather(phone_side(started), wallet_side(started))
        finally:
            relaying = False
            await prober
            probe_thread.stop()
        self.results[f"{name}_seconds"] = round(time.monotonic() - started, 2)
        self.results[f"webhook_while_{name}_ms"] = summary(probe)


async def wallet_opens(session: aiohttp.ClientSession, message: XmtpMessage) -> bytes:
    """What the wallet's app does to show the photo: fetch it from the gateway's URL,
    check its digest and decrypt it."""
    remote = decode_remote_attachment(message.encoded)
    async with session.get(remote.url) as response:
        payload = await response.read()
    opened = await asyncio.to_thread(decrypt_attachment, payload, remote)
    return opened.data


def report(r: dict[str, Any]) -> str:
    def row(name: str, s: dict[str, float]) -> str:
        return f"{name:52}{s['p50']:>9}{s['p99']:>9}"

    native = r["native_envelope_send_ms"]
    floor_in = {k: r["floor_phone_to_wallet_media_ms"][k] + native[k] for k in ("p50", "p99")}
    floor_out = {k: r["floor_wallet_to_phone_media_ms"][k] + native[k] for k in ("p50", "p99")}
    return "\n".join([
        f"{r['photos']} photos of {r['bytes']:,} bytes each way",
        f"{'':52}{'p50 ms':>9}{'p99 ms':>9}",
        row("phone → wallet (webhook → wallet's stream)", r["phone_to_wallet_stream_ms"]),
        row("phone → wallet (webhook → bytes in the wallet)", r["phone_to_wallet_opened_ms"]),
        row("  floor: fetch + encrypt + upload", r["floor_phone_to_wallet_media_ms"]),
        row("wallet → phone (send → the phone has it)", r["wallet_to_phone_ms"]),
        row("wallet → phone (send → Twilio API call)", r["wallet_to_phone_api_call_ms"]),
        row("  floor: fetch + verify/decrypt + store + read", r["floor_wallet_to_phone_media_ms"]),
        row("native: a remote attachment's envelope, client → client", native),
        row("webhook (a text, 20/s), idle", r["webhook_idle_ms"]),
        row(f"webhook (a text, 20/s), {r['rate']:g} photos/s relaying each way",
            r["webhook_while_relaying_paced_ms"]),
        row("webhook (a text, 20/s), photos back to back both ways",
            r["webhook_while_relaying_flat_out_ms"]),
        "",
        f"floor with the native send, p50 / p99 ms: phone → wallet {floor_in['p50']:.1f} / "
        f"{floor_in['p99']:.1f}; wallet → phone {floor_out['p50']:.1f} / "
        f"{floor_out['p99']:.1f}",
        f"relayed ÷ floor at p50: phone → wallet (stream) "
        f"{r['phone_to_wallet_stream_ms']['p50'] / floor_in['p50']:.2f}x, wallet → phone "
        f"{r['wallet_to_phone_ms']['p50'] / floor_out['p50']:.2f}x",
        f"both ways back to back: {r['relaying_flat_out_seconds']} s for "
        f"{2 * r['photos']} photos",
        f"the first photo each way (cold, not in the series): phone → wallet "
        f"{r['cold_phone_to_wallet_stream_ms']['p50']} ms, wallet → phone "
        f"{r['cold_wallet_to_phone_ms']['p50']} ms",
    ])


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=40, help="photos each way per series")
    parser.add_argument("--size", type=int, default=1_000_000, help="bytes per photo")
    parser.add_argument("--rate", type=float, default=2.0,
                        help="photos a second each way while the webhook is probed")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--gateway-log", type=Path, default=None,
                        help="keep the gateway's log here (PYTHONASYNCIODEBUG=1 in the "
                        "environment makes it name every callback that held its loop "
                        "over 100 ms)")
    args = parser.parse_args()
    return await run_reported(
        "bench-media-", lambda tmp: Bench(tmp, args.photos, args.size, args.rate).run(),
        report, args.json, keep_log=args.gateway_log)

if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

