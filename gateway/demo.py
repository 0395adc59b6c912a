"""``gateway demo [--config PATH] [--script]``: a phone and a wallet talking through the
gateway, in one terminal.

The gateway runs in-process on its config (by default the embedded one: devnode,
Twilio simulator, SQLite under ./data). The wallet is a real libxmtp client holding
``demo.wallet_key`` (its database under ``<data_dir>/xmtp/demo-wallet.db3``, so reruns
reuse its installation); the phone is the simulator's, texting through signed webhooks
and receiving what the gateway sends to it.

Interactive (when stdin is a terminal): ``p hello`` texts from the phone (to the current
number; ``to dial`` or ``to +1555…`` switches to another number a rule serves), ``w
thanks`` replies from the wallet in the last conversation it saw, ``p! photo.jpg [text]``
and ``w! photo.jpg`` send a file (MMS from the phone, an XMTP attachment from the
wallet), ``q`` quits. Files either side receives are saved under
``<data_dir>/demo-files/``. ``--script``, or no terminal, runs phone → wallet, wallet →
phone, a photo each way (bytes compared), dial mode, STOP then START, prints the
transcript and exits 0 only if every step arrived in time.

The terminal shows the transcript only: the gateway's own log goes to
``<data_dir>/demo.log`` (one run's worth), as the banner says. The data directory is
claimed for the run like ``gateway serve`` claims it, so a demo beside a running
gateway on the same directory stops at once and says why.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway import demo_files
from gateway.app import SIMULATOR, create_app
from gateway.config import GatewayConfig
from gateway.data_dir import exclusive_data_dir
from gateway.domain.ports.blobs import BlobStore
from gateway.domain.rules import Rule, RuleMode
from gateway.errors import CannotListen, GatewayError
from gateway.listen import local_url
from gateway.logs import setup_logging
from gateway.media.attachments import Attachment
from gateway.media.transfer import filename_for
from gateway.media.wiring import BLOB_STORE
from gateway.serve import config_for_command, listening_socket
from gateway.terminal import stdin_lines
from gateway.testing.twilio_sim import TwilioSimulator
from gateway.xmtp.client import Conversation, XmtpClient, XmtpMessage

log = logging.getLogger(__name__)

DEMO_PHONE = "+15550123456"
STEP_SECONDS = 30.0  # each scripted step must arrive within this
LOG_FILE = "demo.log"  # under the data directory


def run(args: argparse.Namespace) -> int:
    # libxmtp logs to the terminal; its (harmless) shutdown errors would drown the demo.
    os.environ.setdefault("RUST_LOG", "off")
    config = config_for_command(args)
    if config is None:
        return 1
    # Nobody could type at the interactive prompt: run the script instead of waiting.
    script = args.script or not sys.stdin.isatty()
    problem = _unsuitable(config)
    if problem:
        print(f"gateway demo: {problem}", file=sys.stderr)
        return 1
    try:
        with exclusive_data_dir(config.data_dir), _logging_to(config.data_dir / LOG_FILE,
                                                               config):
            return asyncio.run(_main(config, script=script))
    except GatewayError as exc:
        print(f"gateway demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


@contextlib.contextmanager
def _logging_to(path: Path, config: GatewayConfig) -> Iterator[None]:
    """The gateway's log in a file, so the terminal shows only the transcript (a STOP
    refusal's warning, say, would otherwise land between two of its lines)."""
    with path.open("w", encoding="utf-8") as file:
        handler = setup_logging("plain", "INFO", secrets=config.secret_values(),
                                stream=file)
        try:
            yield
        finally:
            logging.getLogger().removeHandler(handler)


def _unsuitable(config: GatewayConfig) -> str | None:
    if config.demo is None:
        return "the config has no demo section (demo.wallet_key): nobody to play the wallet"
    if not config.twilio.simulator.embedded:
        return "the demo needs twilio.simulator.embedded: true (it plays the phone)"
    if not any(config.demo.wallet_address in rule.wallets or rule.mode is RuleMode.DIAL
               for rule in config.rulebook().rules):
        return "no rule reaches the demo wallet (a fixed rule with it, or a dial rule)"
    return None


async def _main(config: GatewayConfig, *, script: bool) -> int:
    with _listening(config) as (sock, config):
        async with _running(config, sock) as demo:
            if script:
                return await Script(demo).run()
            return await Interactive(demo).run()


@contextlib.contextmanager
def _listening(config: GatewayConfig) -> Iterator[tuple[socket.socket, GatewayConfig]]:
    """A socket on the configured port, or on any free one when it is taken, and the
    config that says so (the demo is local: the public URL follows). Bound the way the
    server binds (SO_REUSEADDR), so the last run's connections in TIME_WAIT do not
    move it."""
    host = config.server.host
    with contextlib.ExitStack() as stack:
        try:
            sock = stack.enter_context(listening_socket(host, config.server.port))
        except CannotListen:
            sock = stack.enter_context(listening_socket(host, 0))
            moved = sock.getsockname()[1]
            server = config.server.model_copy(
                update={"port": moved, "public_url": local_url(host, moved)})
            config = config.model_copy(update={"server": server})
        yield sock, config


@dataclass
class Demo:
    config: GatewayConfig
    simulator: TwilioSimulator
    wallet: XmtpClient
    store: BlobStore  # where the wallet uploads a remote attachment's ciphertext
    session: aiohttp.ClientSession  # the wallet's, to fetch remote attachments
    transcript: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # wallet-side message ids already shown
    phone_seen: int = 0
    wallet_files: list[bytes] = field(default_factory=list)  # what the wallet received
    phone_files: list[bytes] = field(default_factory=list)  # what the phone received

    @property
    def files_dir(self) -> Path:
        return self.config.data_dir / demo_files.FILES_DIR

    def say(self, line: str) -> None:
        self.transcript.append(line)
        print(line, flush=True)

    async def phone_texts(self, to: str, body: str, *,
                          file: tuple[str, bytes, str] | None = None) -> None:
        """``file``: (name, bytes, type) sent with it, as MMS."""
        shown = f"📎 {file[0]} ({demo_files.describe(file[1], file[2])}) " if file else ""
        self.say(f"phone  → {to}: {shown}{body}")
        result = await self.simulator.text_from_phone(
            DEMO_PHONE, to, body, attachments=[(file[1], file[2])] if file else ())
        if result.status != 200:
            raise GatewayError(f"the gateway answered the webhook with {result.status}")

    async def wallet_sends_file(self, group: Conversation, name: str, data: bytes,
                                kind: str) -> None:
        self.say(f"wallet → [{group.name}] 📎 {name} ({demo_files.describe(data, kind)})")
        await group.send_encoded(await demo_files.wallet_content(
            Attachment(name, kind, data), self.store,
            inline_max_bytes=self.config.media.inline_max_bytes))

    async def phone_inbox(self) -> list[tuple[str, str]]:
        """(from, body) of texts the phone got since the last call, shown as they come;
        their files saved."""
        received = self.simulator.inbox(DEMO_PHONE)[self.phone_seen:]
        self.phone_seen += len(received)
        for text in received:
            self.say(f"phone  ← {text.from_}: {text.body}")
            for index, media in enumerate(text.media):
                path = demo_files.save(self.files_dir / "phone", filename_for(
                    media.content_type, index), media.data)
                self.phone_files.append(media.data)
                self.say(f"phone  ← 📎 {demo_files.describe(media.data, media.content_type)}"
                         f", saved as {path}")
        return [(t.from_, t.body) for t in received]

    async def wallet_news(self) -> list[tuple[Conversation, XmtpMessage]]:
        """Messages from others in the wallet's groups it has not shown yet; files are
        opened (fetched and decrypted when remote) and saved."""
        await self.wallet.sync_all()
        news = []
        for group in self.wallet.conversations():
            if group.is_dm:
                continue
            for message in await group.messages():
                if message.id in self.seen or message.sender_inbox_id == self.wallet.inbox_id:
                    continue
                self.seen.add(message.id)
                news.append((group, message))
                if demo_files.is_file(message):
                    await self._wallet_file(group, message)
                else:
                    self.say(f"wallet ← [{group.name}] {message.text or message.content_type}")
        return news

    async def _wallet_file(self, group: Conversation, message: XmtpMessage) -> None:
        try:
            got = await demo_files.open_file(message, self.session)
        except (GatewayError, aiohttp.ClientError, TimeoutError) as exc:
            self.say(f"wallet ← [{group.name}] a file that could not be opened: {exc}")
            return
        path = demo_files.save(self.files_dir / "wallet", got.filename, got.data)
        self.wallet_files.append(got.data)
        self.say(f"wallet ← [{group.name}] 📎 {got.filename} "
                 f"({demo_files.describe(got.data, got.mime_type)}), saved as {path}")


@contextlib.asynccontextmanager
async def _running(config: GatewayConfig, sock: socket.socket) -> AsyncIterator[Demo]:
    assert config.demo is not None
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()  # opens the store, simulator, devnode and the gateway's XMTP client
    stack = contextlib.AsyncExitStack()
    try:
        site = web.SockSite(runner, sock)
        await site.start()
        wallet = await _demo_wallet(config, app)
        try:
            session = await stack.enter_async_context(aiohttp.ClientSession())
            demo = Demo(config, app[SIMULATOR], wallet, app[BLOB_STORE], session)
            for group in wallet.conversations():  # history from earlier runs stays quiet
                demo.seen.update(m.id for m in await group.messages())
            print(f"gateway on {config.server.public_url}; demo wallet "
                  f"{config.demo.wallet_address}; phone {DEMO_PHONE}\n"
                  f"gateway logs: {config.data_dir / LOG_FILE}", flush=True)
            yield demo
            # the simulator's status callbacks still on their way reach the gateway
            # before it stops, instead of failing against a closed port in the log
            with contextlib.suppress(TimeoutError):
                await app[SIMULATOR].settle(within=5.0)
        finally:
            await stack.aclose()
            wallet.close()
    finally:
        await runner.cleanup()


async def _demo_wallet(config: GatewayConfig, app: web.Application) -> XmtpClient:
    assert config.demo is not None
    from gateway.appkeys import CHAT
    from gateway.xmtp.budget import PacedChatNetwork
    from gateway.xmtp.network import XmtpChatNetwork, node_url_for

    chat = app[CHAT]
    if isinstance(chat, PacedChatNetwork):
        chat = chat.inner
    node_url = node_url_for(config.xmtp)
    if node_url is None and isinstance(chat, XmtpChatNetwork):
        node_url = chat.node_url
    assert node_url is not None
    key = config.demo.wallet_key.get_secret_value()
    db = config.data_dir / "xmtp" / "demo-wallet.db3"
    db.parent.mkdir(parents=True, exist_ok=True)
    # The database key is derived from the wallet key: nothing more to keep.
    db_key = hashlib.sha256(b"gateway demo wallet db|" + key.encode()).digest()
    wallet = await XmtpClient.create(node_url=node_url, private_key=key, db_path=str(db),
                                     encryption_key=db_key,
                                     is_secure=node_url.startswith("https:"))
    await wallet.sync_all()
    return wallet


async def _until(check: Callable[[], Awaitable[bool]], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.2)
    return False


class Script:
    """The scripted round trip; every step waits at most STEP_SECONDS."""

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        rules = demo.config.rulebook().rules
        wallet = demo.config.demo.wallet_address if demo.config.demo else None
        self.support = next((r for r in rules if wallet in r.wallets), None)
        self.dial = next((r for r in rules if r.mode is RuleMode.DIAL), None)
        self.alias = demo.config.demo.alias if demo.config.demo else "demo"
        self.tag = secrets.token_hex(2)  # marks this run's texts apart from earlier runs'
        self.failed: list[str] = []
        self.group: Conversation | None = None  # the support conversation, once seen

    async def run(self) -> int:
        steps: list[tuple[str, Callable[[], Awaitable[bool]]]] = []
        if self.support is not None:
            steps += [("phone → wallet", self.phone_to_wallet),
                      ("wallet → phone", self.wallet_to_phone),
                      ("photo phone → wallet", self.photo_to_wallet),
                      ("photo wallet → phone", self.photo_to_phone)]
        if self.dial is not None:
            steps.append(("dial mode", self.dial_mode))
        if self.support is not None:
            steps.append(("STOP then START", self.stop_start))
        for name, step in steps:
            self.demo.say(f"--- {name}")
            ok = await step()
            self.demo.say(f"--- {name}: {'ok' if ok else 'DID NOT ARRIVE'}")
            if not ok:
                self.failed.append(name)
        print(f"\n{len(steps) - len(self.failed)}/{len(steps)} steps arrived"
              + (f"; missing: {', '.join(self.failed)} (the gateway's log: "
                 f"{self.demo.config.data_dir / LOG_FILE})" if self.failed else ""),
              flush=True)
        return 1 if self.failed or not steps else 0

    async def _wallet_sees(self, text: str) -> Conversation | None:
        found: list[Conversation] = []

        async def check() -> bool:
            for group, message in await self.demo.wallet_news():
                if message.text and text in message.text:
                    found.append(group)
            return bool(found)

        return found[0] if await _until(check, STEP_SECONDS) else None

    async def _phone_gets(self, text: str, from_: str) -> bool:
        async def check() -> bool:
            return any(text in body and sender == from_
                       for sender, body in await self.demo.phone_inbox())

        return await _until(check, STEP_SECONDS)

    async def phone_to_wallet(self) -> bool:
        assert self.support is not None
        body = f"Hello from the demo phone ({self.tag})"
        await self.demo.phone_texts(self.support.proxy, body)
        self.group = await self._wallet_sees(body)
        return self.group is not None

    async def wallet_to_phone(self) -> bool:
        assert self.support is not None
        if self.group is None:
            return False
        reply = f"Hi, the demo wallet here ({self.tag})"
        self.demo.say(f"wallet → [{self.group.name}] {reply}")
        await self.group.send_text(reply)
        return await self._phone_gets(reply, self.support.proxy)

    async def photo_to_wallet(self) -> bool:
        """A made-up photo by MMS: the wallet gets it as a remote attachment, the same
        bytes."""
        assert self.support is not None
        picture = demo_files.sample_picture()
        await self.demo.phone_texts(self.support.proxy, f"a photo ({self.tag})",
                                    file=("photo.png", picture, "image/png"))

        async def check() -> bool:
            await self.demo.wallet_news()
            return picture in self.demo.wallet_files

        return await _until(check, STEP_SECONDS)

    async def photo_to_phone(self) -> bool:
        """The wallet's photo: the phone gets it by MMS, the same bytes."""
        if self.group is None:
            return False
        picture = demo_files.sample_picture()
        await self.demo.wallet_sends_file(self.group, "from-the-wallet.png", picture,
                                          "image/png")

        async def check() -> bool:
            await self.demo.phone_inbox()
            return picture in self.demo.phone_files

        return await _until(check, STEP_SECONDS)

    async def dial_mode(self) -> bool:
        assert self.dial is not None
        body = f"hello through the shared number ({self.tag})"
        await self.demo.phone_texts(self.dial.proxy, f"{self.alias}: {body}")
        group = await self._wallet_sees(body)
        if group is None:
            return False
        reply = f"dial reply ({self.tag})"
        self.demo.say(f"wallet → [{group.name}] {reply}")
        await group.send_text(reply)
        return await self._phone_gets(reply, self.dial.proxy)

    async def stop_start(self) -> bool:
        assert self.support is not None
        group = self.group
        if group is None:
            return False
        await self.demo.phone_texts(self.support.proxy, "STOP")
        if await self._wallet_sees("replied STOP") is None:
            return False
        await self.demo.phone_texts(self.support.proxy, "START")
        if await self._wallet_sees("replied START") is None:
            return False
        reply = f"welcome back ({self.tag})"
        self.demo.say(f"wallet → [{group.name}] {reply}")
        await group.send_text(reply)
        return await self._phone_gets(reply, self.support.proxy)


class Interactive:
    """Lines from the terminal: ``p TEXT`` as the phone, ``w TEXT`` as the wallet."""

    HELP = ("type  p TEXT  to text as the phone,  w TEXT  to reply as the wallet,"
            "  p! FILE [TEXT]  /  w! FILE  to send a file (a photo) from either,"
            "  to RULE  (or its +1… number) to text another number,  q  to quit")

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        self.numbers = ServedNumbers.of(demo.config.rulebook().rules)
        self.to = self.numbers.first
        self.group: Conversation | None = None

    async def run(self) -> int:
        print(f"numbers: {self.numbers}")
        print(self.HELP)
        lines = stdin_lines("demo-stdin")
        watcher = asyncio.create_task(self._watch())
        try:
            while True:
                line = await lines.get()
                if line is None or line.strip() in ("q", "quit", "exit"):
                    return 0
                with contextlib.suppress(GatewayError):
                    await self._handle(line.strip())
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _handle(self, line: str) -> None:
        command, _, text = line.partition(" ")
        command = command.rstrip(">")
        text = text.strip()
        if command == "p" and text:
            await self.demo.phone_texts(self.to, text)
        elif command == "w" and text:
            if self.group is None:
                print("the wallet has no conversation yet: text it from the phone first")
                return
            self.demo.say(f"wallet → [{self.group.name}] {text}")
            await self.group.send_text(text)
        elif command in ("p!", "w!") and text:
            path, _, caption = text.partition(" ")
            file = await asyncio.to_thread(_read, path)
            if file is None:
                print(f"cannot read {path}")
            elif command == "p!":
                await self.demo.phone_texts(self.to, caption, file=file)
            elif self.group is None:
                print("the wallet has no conversation yet: text it from the phone first")
            else:
                await self.demo.wallet_sends_file(self.group, *file)
        elif command == "to" and text:
            number = self.numbers.named(text)
            if number is None:
                # a number no rule serves would be answered by nobody: nothing to see
                print(f"no rule serves {text!r}; choose one of: {self.numbers}")
                return
            self.to = number
            print(f"the phone now texts {self.to}")
        elif line:
            print(self.HELP)

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(GatewayError):
                for group, _ in await self.demo.wallet_news():
                    self.group = group
                await self.demo.phone_inbox()
            await asyncio.sleep(0.3)


def _read(name: str) -> tuple[str, bytes, str] | None:
    """(name, bytes, type) of a file to send; None when it cannot be read."""
    path = Path(name).expanduser()
    try:
        return path.name, path.read_bytes(), demo_files.kind_of(path)
    except OSError:
        return None


@dataclass(frozen=True)
class ServedNumbers:
    """The numbers the phone can text: each rule's, by the rule's name."""

    by_rule: Mapping[str, str]

    @classmethod
    def of(cls, rules: Iterable[Rule]) -> ServedNumbers:
        return cls({rule.name: rule.proxy for rule in rules})

    @property
    def first(self) -> str:
        return next(iter(self.by_rule.values()))

    def named(self, choice: str) -> str | None:
        """The number ``choice`` names, a rule's name (any case) or a served number
        (spaces and dashes allowed); None for anything else."""
        for name, number in self.by_rule.items():
            if choice.strip().casefold() == name.casefold():
                return number
        digits = "".join(choice.split()).replace("-", "")
        return digits if digits in self.by_rule.values() else None

    def __str__(self) -> str:
        return ", ".join(f"{name} {number}" for name, number in self.by_rule.items())
