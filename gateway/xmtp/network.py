"""``XmtpChatNetwork``: the gateway's ``ChatNetwork`` over real libxmtp.

One XMTP inbox for the gateway (``xmtp.wallet_key``), its libxmtp database at
``xmtp.db_path`` encrypted with ``xmtp.db_encryption_key`` and reused across restarts
(a new database would be a new installation; XMTP caps an inbox at 10: see
``installations``, which refuses an accidental or an 11th one). Each conversation is a
group of the gateway and the conversation's wallets, named after the phone side.
With ``xmtp.gateway_host`` libxmtp uses XMTP's decentralised network instead of a v3 node.

Threading: libxmtp runs its native work on the thread of the loop that awaits it, so
the client lives on its own thread with its own loop (``LoopThread``). Every method
called from the gateway's loop hops there and back; streamed messages hop back one by
one. The loop that answers webhooks never runs libxmtp code.

Receiving (``messages``): the stream is opened first; libxmtp subscribes to each group
from the last message it processed, so the node sends what arrived while the gateway
was away before anything new. Then every group's stored messages after its high-water
mark are yielded (catch-up: what libxmtp processed but the gateway had not recorded when
it stopped), then the stream's messages follow, minus those already yielded. No group
is synced from the network first: libxmtp's sync of every group costs a request per
group (seconds with thousands of groups) and fetches nothing the stream does not send.
A stream failure is raised to the consumer, which opens ``messages`` again: catch-up,
then stream.

Content: texts are relayed; membership changes and read receipts are protocol noise
and left out; a reaction comes with its emoji as text and a reply with its own text,
each with the message it refers to (and the start of what that said, from the
gateway's copy of the group); any other content type (attachment, leave request, …)
comes with ``text=None``, its type name and its EncodedContent, for the media step and
the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import xmtp_bindings as xb
from aiohttp import web
from eth_utils.address import to_checksum_address

from gateway.config import GatewayConfig, XmtpConfig
from gateway.data_dir import LOCK_FILE, Held, claim
from gateway.domain.ids import WalletAddress
from gateway.domain.ports import ChatMessage, Reference
from gateway.errors import ChatNetworkError, WalletNotReachable
from gateway.xmtp.api import GatewayAccess
from gateway.xmtp.client import Consent, Conversation, XmtpClient, XmtpMessage
from gateway.xmtp.content import (
    REACTION,
    REPLY,
    content_name,
    quotable,
    read_reaction,
    read_reply,
)
from gateway.xmtp.inbox_state import MAX_INSTALLATIONS
from gateway.xmtp.installations import InstallationGuard, InstallationRecord, warn_if_near_caps
from gateway.xmtp.loop_thread import LoopThread, on_loop
from gateway.xmtp.send_log import SendLog

log = logging.getLogger(__name__)

# Set by ``serve --new-installation``: this start may register a new installation
# although this data_dir has one recorded (see ``installations``).
ALLOW_NEW_INSTALLATION: web.AppKey[bool] = web.AppKey("xmtp_allow_new_installation", bool)
DEVNODE_URL_FILE = "devnode.url"  # under the data directory, while the gateway runs

# libxmtp's v3 hosts of the public networks (TLS). ``xmtp.node_url`` overrides them.
NETWORK_HOSTS = {
    "dev": "https://grpc.dev.xmtp.network:443",
    "production": "https://grpc.production.xmtp.network:443",
}

HighWater = Callable[[str], Awaitable[int | None]]
_SILENT_TYPES = frozenset({"group_updated", "group_membership_change", "readReceipt"})
_HANDOFF_LIMIT = 1000  # streamed messages waiting for the consumer on the gateway's loop
_SWEEP_PAGE = 50  # conversations listed at a time by the catch-up's sweep


def node_url_for(xmtp: XmtpConfig) -> str | None:
    """The configured node, or the public network's host; None for an embedded devnode
    (its URL is known once it listens)."""
    if xmtp.node_url is not None:
        return str(xmtp.node_url)
    if xmtp.env == "local":
        # libxmtp wants a v3 host even when a gateway host makes it use none
        return xmtp.gateway_host
    return NETWORK_HOSTS[xmtp.env]


def gateway_access(xmtp: XmtpConfig) -> GatewayAccess | None:
    """The decentralised network's entry as configured; None: XMTP's v3 nodes."""
    if xmtp.gateway_host is None:
        return None
    token = xmtp.gateway_auth.token
    return GatewayAccess(host=xmtp.gateway_host,
                         auth_token=token.get_secret_value() if token else None,
                         auth_header=xmtp.gateway_auth.header)


class XmtpChatNetwork:
    """Create with ``XmtpChatNetwork.open``; ``close`` when done."""

    def __init__(self, thread: LoopThread, client: XmtpClient, sends: SendLog,
                 node_url: str) -> None:
        self.node_url = node_url
        self._thread = thread
        self._client = client
        self._sends = sends
        self._addresses: dict[str, WalletAddress] = {}  # inbox id -> its wallet
        self._creating: dict[str, asyncio.Lock] = {}  # keyed group creations, one at a time
        self.address = WalletAddress(client.address)
        self.inbox_id = client.inbox_id

    @property
    def client(self) -> XmtpClient:
        """The libxmtp client (the catch-up sweep reads the stored groups through it)."""
        return self._client

    @property
    def installation_id(self) -> str:
        """This process's XMTP installation (its libxmtp database)."""
        return str(self._client.installation_id)

    @classmethod
    async def open(cls, *, node_url: str, private_key: str | bytes, db_path: Path | None,
                   encryption_key: bytes | None, gateway: GatewayAccess | None = None,
                   record: InstallationRecord | None = None,
                   allow_new_installation: bool = False) -> XmtpChatNetwork:
        """Opens the gateway's installation, registering one only when ``installations``
        allows it; ``record`` (none: no record kept) names the one this data_dir has."""
        thread = LoopThread("xmtp")
        network_name = gateway.host if gateway is not None else node_url
        try:
            if db_path is not None:
                db_path.parent.mkdir(parents=True, exist_ok=True)
            guard = InstallationGuard(record, db_path, allow_new=allow_new_installation)
            client = await thread.run(XmtpClient.create(
                node_url=node_url, private_key=private_key,
                db_path=str(db_path) if db_path is not None else None,
                encryption_key=encryption_key, is_secure=node_url.startswith("https:"),
                gateway=gateway, before_registering=guard))
            sends = SendLog(db_path.with_name(db_path.name + ".sends") if db_path else None)
        except BaseException:
            thread.stop()
            raise
        network = cls(thread, client, sends, network_name)
        if record is not None:
            recorded = record.read()
            if recorded is None or recorded.installation_id != client.installation_id:
                record.write(client, network_name)
        await network._take_stock()
        return network

    async def _take_stock(self) -> None:
        """Logs the installation and how full the inbox is, loudly near either cap. A
        failure to read that is logged, not raised: the client is open and works."""
        try:
            state = await self._thread.run(self._client.inbox_state())
        except ChatNetworkError as exc:
            log.warning("XMTP inbox %s (wallet %s) on %s: installation %s; could not read "
                        "the inbox's installations: %s", self.inbox_id, self.address,
                        self.node_url, self._client.installation_id, exc)
            return
        log.info("XMTP inbox %s (wallet %s) on %s: installation %s, %d of %d installations "
                 "in use, %s identity updates left", self.inbox_id, self.address,
                 self.node_url, self._client.installation_id, state.in_use,
                 MAX_INSTALLATIONS, state.updates_left)
        warn_if_near_caps(state)

    async def close(self) -> None:
        async def release() -> None:
            # The message stream first: cancelling its pump only asks it to stop, and a
            # stream still closing when the database is released fails inside libxmtp.
            await self._thread.settle()
            self._client.close()

        with contextlib.suppress(ChatNetworkError):
            await self._thread.run(release())
        self._thread.stop()
        self._sends.close()

    # ---- ChatNetwork --------------------------------------------------------------------

    async def is_reachable(self, wallet: WalletAddress) -> bool:
        return await self._thread.run(self._client.inbox_id_of(wallet)) is not None

    async def create_group(self, *, name: str, members: Sequence[WalletAddress],
                           key: str | None = None) -> str:
        async def create() -> str:
            if key is None:
                return (await self._client.new_group(list(members), name=name)).id
            async with self._creating.setdefault(key, asyncio.Lock()):
                return await self._create_keyed(name, members, key)

        return await self._thread.run(create())

    async def _create_keyed(self, name: str, members: Sequence[WalletAddress],
                            key: str) -> str:
        recorded = self._sends.group_of(key)
        if recorded is not None:
            group = await self._made_before(key, recorded[0])
            if group is not None:
                await self._joined(group, members)
                self._sends.group_made(key, group.id)
                return group.id
        self._sends.group_started(key)
        try:
            group = await self._client.new_group(list(members), name=name, app_data=key)
        except WalletNotReachable:
            self._sends.group_dropped(key)  # refused before libxmtp made anything
            raise
        self._sends.group_made(key, group.id)
        return group.id

    async def _made_before(self, key: str, group_id: str | None) -> Conversation | None:
        """The group an earlier creation under ``key`` made: by the id it recorded, or,
        when the process stopped before recording it, by the key in its metadata."""
        if group_id is not None:
            with contextlib.suppress(ChatNetworkError):
                return await self._group(group_id)
        for conversation in self._client.conversations():
            if not conversation.is_dm and conversation.app_data == key:
                log.info("found the group made under %s before the gateway stopped", key)
                return conversation
        return None

    async def _joined(self, group: Conversation, members: Sequence[WalletAddress]) -> None:
        """Adds the members a creation cut short did not add yet."""
        present = set(await group.member_inbox_ids())
        missing = []
        for wallet in members:
            inbox_id = await self._client.inbox_id_of(wallet)
            if inbox_id is None:
                raise WalletNotReachable(wallet)
            if inbox_id not in present:
                missing.append(wallet)
        if missing:
            await group.add_members(missing)

    async def add_members(self, group_id: str, members: Sequence[WalletAddress]) -> None:
        async def add() -> None:
            for wallet in members:
                if await self._client.inbox_id_of(wallet) is None:
                    raise WalletNotReachable(wallet)
            await (await self._group(group_id)).add_members(list(members))

        await self._thread.run(add())

    async def remove_members(self, group_id: str, members: Sequence[WalletAddress]) -> None:
        async def remove() -> None:
            await (await self._group(group_id)).remove_members(list(members))

        await self._thread.run(remove())

    async def rename_group(self, group_id: str, name: str) -> None:
        async def rename() -> None:
            await (await self._group(group_id)).rename(name)

        await self._thread.run(rename())

    async def send(self, group_id: str, text: str, *, key: str | None = None) -> str:
        return await self._thread.run(self._send(group_id, xb.encode_text(text), key))

    async def send_encoded(self, group_id: str, content: Callable[[], Awaitable[bytes]], *,
                           key: str) -> str:
        published = await self._thread.run(self._republish(group_id, key))
        if published is not None:
            return published
        # Made on the gateway's loop (it fetches, encrypts and uploads there), then
        # prepared, logged and published on the XMTP thread.
        encoded = await content()
        return await self._thread.run(self._send(group_id, encoded, key))

    async def _republish(self, group_id: str, key: str) -> str | None:
        """A retry of a send whose outcome was not known: publishes what was prepared
        under ``key`` (None when nothing was)."""
        found = self._sends.find(key)
        if found is None or found[0] != group_id:
            return None
        await (await self._group(group_id)).publish_stored(found[1])
        return found[1]

    async def _send(self, group_id: str, encoded: bytes, key: str | None) -> str:
        if key is not None and (published := await self._republish(group_id, key)):
            return published
        group = await self._group(group_id)
        message_id = group.prepare_encoded(encoded)
        if key is not None:
            self._sends.record(key, group_id, message_id)
        await group.publish_stored(message_id)
        return message_id

    async def _group(self, group_id: str) -> Conversation:
        """The group, fetching new welcomes once when it is not known here yet (one
        another installation of the gateway's inbox made, say: a data directory
        restored from an older backup)."""
        try:
            return self._client.conversation(group_id)
        except ChatNetworkError:
            await self._client.sync_welcomes()
            return self._client.conversation(group_id)

    async def messages(
        self, high_water: HighWater,
    ) -> AsyncIterator[ChatMessage]:
        handoff: asyncio.Queue[ChatMessage | BaseException | None] = asyncio.Queue(
            _HANDOFF_LIMIT)
        here = asyncio.get_running_loop()
        pump = self._thread.submit(self._pump(high_water, handoff, here))
        try:
            while True:
                item = await handoff.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            pump.cancel()

    # ---- on the XMTP thread -------------------------------------------------------------

    async def _pump(self, high_water: HighWater,
                    handoff: asyncio.Queue[ChatMessage | BaseException | None],
                    there: asyncio.AbstractEventLoop) -> None:
        async def put(item: ChatMessage | BaseException | None) -> None:
            await on_loop(there, handoff.put(item))

        try:
            # The stream first: what arrives during the catch-up waits in it.
            stream = await self._client.stream_all_messages(
                consent=[Consent.ALLOWED, Consent.UNKNOWN])
            async with stream:
                catch_up = _CatchUp(self, high_water, there, put)
                async with asyncio.TaskGroup() as group:
                    sweep = group.create_task(catch_up.sweep())
                    async for message in stream:
                        # a group's stored messages go before anything streamed in it
                        await catch_up.group(message.conversation_id)
                        if message.id in catch_up.yielded:
                            continue
                        chat = await self.to_chat(message)
                        if chat is not None:
                            await put(chat)
                    sweep.cancel()
            await put(ChatNetworkError("the XMTP message stream closed"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which counts, logs and reopens
            if isinstance(exc, ExceptionGroup):
                exc = exc.exceptions[0]
            with contextlib.suppress(Exception):
                await put(exc)

    async def to_chat(self, message: XmtpMessage) -> ChatMessage | None:
        if message.sender_inbox_id == self.inbox_id or message.is_membership_change:
            return None
        kind = content_name(message.content_type)
        if kind in _SILENT_TYPES:
            return None
        sender = await self._address_of(message.sender_inbox_id)
        if sender is None:
            # A member with no Ethereum address (a passkey inbox, say) cannot be named to
            # a phone. Skipped, not raised: raising would stop the catch-up at this same
            # message on every reopen, and hold up every conversation behind it.
            log.warning("skipped XMTP message %s: its sender's inbox has no Ethereum "
                        "address", message.id)
            return None
        text, reference, removed = message.text, None, False
        said = (read_reaction(message.encoded) if kind == REACTION
                else read_reply(message.encoded) if kind == REPLY else None)
        if said is not None:
            text, removed = said.text, said.removed
            reference = Reference(said.reference, self._quoted(said.reference))
        return ChatMessage(
            group_id=message.conversation_id, message_id=message.id, sender=sender,
            sent_at_ns=message.sent_at_ns, text=text, content_type=kind,
            reference=reference, removed=removed,
            encoded=message.encoded if message.text is None else b"")

    def _quoted(self, message_id: str) -> str | None:
        """The start of what the referenced message said, from this installation's copy
        of the group (the gateway's own posts included)."""
        found = self._client.message(message_id)
        return quotable(found) if found is not None else None

    async def _address_of(self, inbox_id: str) -> WalletAddress | None:
        """The inbox's wallet address; None when it has none. A failed lookup raises."""
        found = self._addresses.get(inbox_id)
        if found is None:
            addresses = (await self._client.addresses_of([inbox_id])).get(inbox_id) or []
            if not addresses:
                return None
            found = WalletAddress(to_checksum_address(addresses[0]))
            self._addresses[inbox_id] = found
        return found


class _CatchUp:
    """The catch-up of one opening of the stream: each group's stored messages after its
    high-water mark (what libxmtp processed but the gateway had not recorded), yielded
    once per group. A background sweep goes through every group; a group the stream
    brings a message for is caught up first, out of turn, so what was missed in a few
    groups is relayed at once rather than after a sweep of thousands."""

    def __init__(self, network: XmtpChatNetwork, high_water: HighWater,
                 there: asyncio.AbstractEventLoop,
                 put: Callable[[ChatMessage], Awaitable[None]]) -> None:
        self._network = network
        self._high_water = high_water
        self._there = there
        self._put = put
        self._groups: dict[str, asyncio.Event] = {}  # caught up once the event is set
        self.yielded: set[str] = set()

    async def sweep(self) -> None:
        after: int | None = None
        while True:
            page = self._network.client.conversations(created_after_ns=after,
                                                       limit=_SWEEP_PAGE)
            fresh = [c for c in page if c.id not in self._groups]
            if not fresh:
                break
            for conversation in fresh:
                await self.group(conversation.id, conversation)  # a DM: marked, not read
            # one nanosecond back: two conversations made in the same nanosecond
            after = page[-1].created_at_ns - 1
            await asyncio.sleep(0)  # the stream's messages between two pages
        if self.yielded:
            log.info("XMTP catch-up: %d message(s) from groups' high-water marks",
                     len(self.yielded))

    async def group(self, group_id: str, conversation: Conversation | None = None) -> None:
        """Returns once ``group_id``'s stored messages are yielded (by this call or
        another)."""
        done = self._groups.get(group_id)
        if done is not None:
            await done.wait()
            return
        done = self._groups[group_id] = asyncio.Event()
        try:
            if conversation is None:
                conversation = self._network.client.conversation(group_id)
            if not conversation.is_dm:
                await self._stored(conversation)
        finally:
            done.set()

    async def _stored(self, conversation: Conversation) -> None:
        mark = await on_loop(self._there, _coroutine(self._high_water(conversation.id)))
        # One nanosecond back: a message sent in the same nanosecond as the mark is not
        # skipped; the one at the mark repeats and the store absorbs it.
        for message in await conversation.messages(
                sent_after_ns=mark - 1 if mark is not None else None):
            chat = await self._network.to_chat(message)
            if chat is not None:
                self.yielded.add(message.id)
                await self._put(chat)


async def _coroutine(awaitable: Awaitable[int | None]) -> int | None:
    return await awaitable


@contextlib.contextmanager
def _announced(path: Path, url: str) -> Iterator[None]:
    """The embedded devnode's URL (its port is any free one) in the data directory, for
    development tools on this machine (``gateway wallet``) to find it."""
    path.write_text(url + "\n", encoding="utf-8")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def running_devnode_url(data_dir: Path) -> str | None:
    """The URL of the embedded devnode of the gateway running on ``data_dir``; None when
    no gateway runs there (a file left by a killed one is stale: nobody holds the data
    directory's lock)."""
    try:
        url = (data_dir / DEVNODE_URL_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    held = claim(data_dir / LOCK_FILE)
    if not isinstance(held, Held):
        os.close(held)  # nobody owns the directory: the file outlived its gateway
        return None
    return url or None


@contextlib.asynccontextmanager
async def open_chat_network(config: GatewayConfig, *, allow_new_installation: bool = False,
                            ) -> AsyncIterator[XmtpChatNetwork]:
    """The gateway's chat network as configured; an embedded devnode is started first
    (on the caller's loop: it is a gRPC server, cheap next to the client)."""
    xmtp = config.xmtp
    # libxmtp logs every step at INFO to stdout unless told otherwise.
    os.environ.setdefault("RUST_LOG", "error")
    async with contextlib.AsyncExitStack() as stack:
        node_url = node_url_for(xmtp)
        if xmtp.devnode.embedded:
            from gateway.xmtp.devnode import DevNode
            from gateway.xmtp.devnode.identity_service import InboxLimits
            from gateway.xmtp.devnode.rate_limits import RateLimits

            devnode = xmtp.devnode
            devnode.db.parent.mkdir(parents=True, exist_ok=True)
            limits = InboxLimits(devnode.max_installations, devnode.max_inbox_updates)
            rates = RateLimits(devnode.max_writes, devnode.max_reads,
                               devnode.rate_window_seconds,
                               per_address=devnode.rate_per_address)
            node = await stack.enter_async_context(
                DevNode.start(db=str(devnode.db), port=devnode.port, limits=limits,
                              rate_limits=rates))
            node_url = node.url
            log.info("embedded XMTP devnode at %s", node.url)
            stack.enter_context(_announced(config.data_dir / DEVNODE_URL_FILE, node.url))
        assert node_url is not None  # config validation: local needs node_url or embedded
        network = await XmtpChatNetwork.open(
            node_url=node_url, private_key=xmtp.wallet_key.get_secret_value(),
            db_path=xmtp.db_path, encryption_key=xmtp.db_encryption_key_bytes(),
            gateway=gateway_access(xmtp),
            record=InstallationRecord.in_data_dir(config.data_dir),
            allow_new_installation=allow_new_installation)
        stack.push_async_callback(network.close)
        yield network
