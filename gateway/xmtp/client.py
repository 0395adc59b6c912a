"""A small async XMTP client over the pinned libxmtp uniffi bindings (``xmtp_bindings``).

Why not the ``xmtp`` SDK from PyPI: as released (0.1.8) it cannot create a client, and
it hides stream errors (its DbOptions call misses arguments; its can_message raises;
its stream errors go to a fire-and-forget task). The bindings are complete; this
module is the thin, typed layer the gateway's XMTP adapter and the devnode tests share.

Everything here talks to one network (``node_url``: the local devnode, or a v3 node of
the XMTP network; or XMTP's decentralised network through a gateway, see ``api``) and
signs with an Ethereum key held in process (eth-account). Library errors leave this
module as ``ChatNetworkError`` or one of its subclasses (see ``library_errors``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import xmtp_bindings as xb
from eth_account import Account
from eth_account.messages import encode_defunct

from gateway.errors import ChatNetworkError, WalletNotReachable
from gateway.xmtp.api import GatewayAccess, connect_api, ethereum_identifier
from gateway.xmtp.inbox_state import InboxState, state_from_ffi
from gateway.xmtp.library_errors import LIBRARY_ERRORS, library_errors, translate

TEXT_CONTENT_TYPE = "xmtp.org/text:1.0"
_STREAM_QUEUE_LIMIT = 10_000

def _is_new_database(db_path: str | None) -> bool:
    """Whether libxmtp would start a new database (and so make a new installation)."""
    return db_path is None or not os.path.exists(db_path)


@dataclass(frozen=True, slots=True)
class PendingInstallation:
    """An installation about to be registered: what a caller may check first."""

    api: Any  # libxmtp's API client
    inbox_id: str
    new_inbox: bool  # the wallet has no inbox yet: this registration creates it
    # None: not made yet, because its database is new (checked before libxmtp writes it)
    installation_id: str | None


class Consent(enum.Enum):
    UNKNOWN = "unknown"
    ALLOWED = "allowed"
    DENIED = "denied"


_CONSENT_TO_FFI = {
    Consent.UNKNOWN: xb.FfiConsentState.UNKNOWN,
    Consent.ALLOWED: xb.FfiConsentState.ALLOWED,
    Consent.DENIED: xb.FfiConsentState.DENIED,
}
_CONSENT_FROM_FFI = {v: k for k, v in _CONSENT_TO_FFI.items()}


@dataclass(frozen=True, slots=True)
class XmtpMessage:
    """One decoded message of a conversation. Ids are lowercase hex."""

    id: str
    conversation_id: str
    sender_inbox_id: str
    sent_at_ns: int
    content_type: str  # "authority/type:major.minor", e.g. "xmtp.org/text:1.0"
    text: str | None  # set for text messages only
    is_membership_change: bool
    # The EncodedContent as sent (attachments and other non-text content are read from it)
    encoded: bytes = field(default=b"", repr=False)


def _message_from_ffi(m: Any) -> XmtpMessage:
    encoded = bytes(m.content)
    content_type, text = _decode_content(encoded)
    return XmtpMessage(
        id=bytes(m.id).hex(), conversation_id=bytes(m.conversation_id).hex(),
        sender_inbox_id=m.sender_inbox_id, sent_at_ns=m.sent_at_ns,
        content_type=content_type, text=text,
        is_membership_change=m.kind == xb.FfiConversationMessageKind.MEMBERSHIP_CHANGE,
        encoded=encoded)


def _decode_content(encoded: bytes) -> tuple[str, str | None]:
    content_type = content_type_of(encoded)
    if content_type.startswith("xmtp.org/text:"):
        with contextlib.suppress(*LIBRARY_ERRORS):
            return content_type, xb.decode_text(encoded)
    return content_type, None


def content_type_of(encoded: bytes) -> str:
    """Reads ``EncodedContent.type`` (field 1: authority_id=1, type_id=2, version_major=3,
    version_minor=4) without a generated class: four fields are all we need."""
    try:
        type_bytes = _proto_fields(encoded).get(1)
        if not isinstance(type_bytes, bytes):
            return "unknown"
        fields = _proto_fields(type_bytes)
    except ValueError:
        return "unknown"

    def text(n: int) -> str:
        value = fields.get(n, b"")
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else ""

    def number(n: int) -> int:
        value = fields.get(n, 0)
        return value if isinstance(value, int) else 0

    return f"{text(1)}/{text(2)}:{number(3)}.{number(4)}"


def _proto_fields(data: bytes) -> dict[int, bytes | int]:
    """The last value of each varint / length-delimited field of a protobuf message."""
    fields: dict[int, bytes | int] = {}
    pos = 0

    def varint() -> int:
        nonlocal pos
        shift = value = 0
        while True:
            if pos >= len(data):
                raise ValueError("truncated varint")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    while pos < len(data):
        key = varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            fields[number] = varint()
        elif wire_type == 2:
            length = varint()
            fields[number] = data[pos:pos + length]
            pos += length
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
    return fields


class _MessageQueueCallback(xb.FfiMessageCallback):
    """Called by libxmtp (possibly from its own threads); hands items to the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 put: Callable[[XmtpMessage | BaseException | None], None]) -> None:
        self._loop = loop
        self._put = put

    def on_message(self, message: Any) -> None:
        self._deliver(_message_from_ffi(message))

    def on_error(self, error: Any) -> None:
        self._deliver(ChatNetworkError(f"message stream failed: {error}"))

    def on_close(self) -> None:
        self._deliver(None)

    def _deliver(self, item: XmtpMessage | BaseException | None) -> None:
        # libxmtp may still call back after the loop that opened the stream has closed;
        # there is nobody left to tell then, and raising into Rust would only abort.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._put, item)


class MessageStream:
    """Messages of every conversation as libxmtp streams them; use as an async iterator.

    Ends when closed or when libxmtp closes the stream; a stream error is raised from the
    iterator (never swallowed). Bounded: if the consumer falls ``_STREAM_QUEUE_LIMIT``
    messages behind, the stream fails rather than grow without limit.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[XmtpMessage | BaseException | None] = asyncio.Queue()
        self._closer: Any = None
        self._done = False

    def _put(self, item: XmtpMessage | BaseException | None) -> None:
        if self._done:
            return
        if isinstance(item, XmtpMessage) and self._queue.qsize() >= _STREAM_QUEUE_LIMIT:
            item = ChatNetworkError("message stream consumer fell too far behind")
        if not isinstance(item, XmtpMessage):
            self._done = True
        self._queue.put_nowait(item)

    async def open(self, conversations: Any, consent: Sequence[Consent] | None) -> None:
        callback = _MessageQueueCallback(asyncio.get_running_loop(), self._put)
        states = None if consent is None else [_CONSENT_TO_FFI[c] for c in consent]
        with library_errors("open message stream"):
            self._closer = await conversations.stream_all_messages(callback, states)
            await self._closer.wait_for_ready()

    def __aiter__(self) -> AsyncIterator[XmtpMessage]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[XmtpMessage]:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def close(self) -> None:
        if self._closer is not None and not self._closer.is_closed():
            with library_errors("close message stream"):
                await self._closer.end_and_wait()
        self._put(None)

    async def __aenter__(self) -> MessageStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Conversation:
    """A DM or group as this client sees it."""

    def __init__(self, ffi: Any) -> None:
        self._ffi = ffi

    @property
    def id(self) -> str:
        return bytes(self._ffi.id()).hex()

    @property
    def is_dm(self) -> bool:
        return bool(self._ffi.conversation_type() == xb.FfiConversationType.DM)

    @property
    def name(self) -> str:
        return str(self._ffi.group_name())

    @property
    def created_at_ns(self) -> int:
        return int(self._ffi.created_at_ns())

    @property
    def app_data(self) -> str:
        with library_errors("read group metadata"):
            return str(self._ffi.app_data())

    @property
    def is_active(self) -> bool:
        """False once this inbox has been removed from the group."""
        return bool(self._ffi.is_active())

    @property
    def dm_peer_inbox_id(self) -> str | None:
        peer: str | None = self._ffi.dm_peer_inbox_id()
        return peer

    async def sync(self) -> None:
        with library_errors("sync conversation"):
            await self._ffi.sync()

    async def send_text(self, text: str) -> str:
        """Sends and waits until the node has it; returns the message id (hex)."""
        with library_errors("send text"):
            return bytes(await self._ffi.send_text(text)).hex()

    async def send_encoded(self, encoded: bytes, *, push: bool = True) -> str:
        """Sends any EncodedContent (an attachment, a remote attachment, ...) and waits
        until the node has it; returns the message id (hex)."""
        with library_errors("send content"):
            return bytes(await self._ffi.send(
                encoded, xb.FfiSendMessageOpts(should_push=push))).hex()

    def prepare_text(self, text: str) -> str:
        """Stores a text locally as unpublished (libxmtp queues its publish intent) and
        returns its id; ``publish_stored`` sends it. A publish retried with the same id
        sends the same message, never a second one."""
        return self.prepare_encoded(xb.encode_text(text))

    def prepare_encoded(self, encoded: bytes) -> str:
        """``prepare_text`` for any EncodedContent (an attachment, a remote attachment)."""
        with library_errors("prepare message"):
            return bytes(self._ffi.prepare_message(encoded, True)).hex()

    async def publish_stored(self, message_id: str) -> None:
        """Publishes a prepared message; a no-op once it is published."""
        with library_errors("publish message"):
            await self._ffi.publish_stored_message(bytes.fromhex(message_id))

    async def leave(self) -> None:
        """Asks to leave the group (a leave request the group's admins act on)."""
        with library_errors("leave group"):
            await self._ffi.leave_group()

    async def messages(self, *, sent_after_ns: int | None = None, limit: int | None = None,
                       include_membership_changes: bool = False) -> list[XmtpMessage]:
        """Messages stored locally, oldest first (call ``sync`` first for news)."""
        options = xb.FfiListMessagesOptions(
            sent_before_ns=None, sent_after_ns=sent_after_ns, limit=limit,
            delivery_status=None, direction=xb.FfiDirection.ASCENDING, content_types=None,
            exclude_content_types=None, exclude_sender_inbox_ids=None, sort_by=None,
            inserted_after_ns=None, inserted_before_ns=None)
        with library_errors("list messages"):
            found = await self._ffi.find_messages(options)
        messages = [_message_from_ffi(m) for m in found]
        if include_membership_changes:
            return messages
        return [m for m in messages if not m.is_membership_change]

    async def member_inbox_ids(self) -> list[str]:
        with library_errors("list members"):
            return [m.inbox_id for m in await self._ffi.list_members()]

    async def add_members(self, addresses: Sequence[str]) -> None:
        with library_errors("add members"):
            await self._ffi.add_members_by_identity([ethereum_identifier(a) for a in addresses])

    async def remove_members(self, addresses: Sequence[str]) -> None:
        with library_errors("remove members"):
            await self._ffi.remove_members_by_identity([ethereum_identifier(a) for a in addresses])

    async def rename(self, name: str) -> None:
        """Sets the group's name (a commit every member receives)."""
        with library_errors("rename group"):
            await self._ffi.update_group_name(name)

    def consent(self) -> Consent:
        with library_errors("read consent"):
            return _CONSENT_FROM_FFI[self._ffi.consent_state()]

    def set_consent(self, consent: Consent) -> None:
        with library_errors("update consent"):
            self._ffi.update_consent_state(_CONSENT_TO_FFI[consent])


class XmtpClient:
    """One installation of one wallet's inbox. Create with ``XmtpClient.create``."""

    def __init__(self, ffi: Any, address: str) -> None:
        self._ffi = ffi
        self.address = address

    @classmethod
    async def create(
        cls, *, node_url: str, private_key: str | bytes, db_path: str | None = None,
        encryption_key: bytes | None = None, is_secure: bool = False,
        device_sync: bool = False, gateway: GatewayAccess | None = None,
        before_registering: Callable[[PendingInstallation], Awaitable[None]] | None = None,
    ) -> XmtpClient:
        """Connects, and registers the inbox/installation if it is new.

        ``db_path=None`` keeps libxmtp's database in memory (lost on exit);
        ``encryption_key`` (32 bytes) encrypts a file database. ``device_sync`` turns on
        libxmtp's history sync between installations of the same inbox (background work
        and an extra group per inbox, so off unless wanted). ``gateway``: XMTP's
        decentralised network instead of the v3 node. ``before_registering`` is awaited
        before a new installation is made (before libxmtp creates a new database) and
        may refuse it by raising.
        """
        account = Account.from_key(private_key)
        address = account.address
        identifier = ethereum_identifier(address)
        api = await connect_api(node_url, is_secure=is_secure, gateway=gateway)
        gateway_host = gateway.host if gateway is not None else None
        new_db = _is_new_database(db_path)
        with library_errors("connect to XMTP", gateway_host=gateway_host):
            found = await xb.get_inbox_id_for_identifier(api, identifier)
            inbox_id = found if found is not None else xb.generate_inbox_id(identifier, 1)
        if new_db and before_registering is not None:
            await before_registering(PendingInstallation(
                api, inbox_id, new_inbox=found is None, installation_id=None))
        with library_errors("connect to XMTP", gateway_host=gateway_host):
            ffi = await xb.create_client(
                api, api,
                xb.DbOptions(db=db_path, encryption_key=encryption_key,
                             max_db_pool_size=None, min_db_pool_size=None),
                inbox_id, identifier, 1, None,
                xb.FfiDeviceSyncMode.ENABLED if device_sync else xb.FfiDeviceSyncMode.DISABLED,
                None, None)
        request = ffi.signature_request()
        if request is not None:
            client = cls(ffi, address)
            if not new_db and before_registering is not None:  # a database never registered
                await before_registering(PendingInstallation(
                    api, inbox_id, new_inbox=found is None,
                    installation_id=client.installation_id))
            with library_errors("register installation", gateway_host=gateway_host,
                                inbox_id=inbox_id):
                text = await request.signature_text()
                signature = account.sign_message(encode_defunct(text=text)).signature
                await request.add_ecdsa_signature(bytes(signature))
                await ffi.register_identity(request)
            return client
        return cls(ffi, address)

    @classmethod
    async def observer(cls, api: Any) -> XmtpClient:
        """A client that only reads: a throwaway wallet's, in memory, never registered
        (so it is no installation of anything). It reads the identity of any inbox,
        including one at its installation cap, for which no client of its own can be
        made."""
        account = Account.create()
        identifier = ethereum_identifier(account.address)
        with library_errors("read XMTP identities"):
            ffi = await xb.create_client(
                api, api, xb.DbOptions(db=None, encryption_key=None, max_db_pool_size=None,
                                       min_db_pool_size=None),
                xb.generate_inbox_id(identifier, 1), identifier, 1, None,
                xb.FfiDeviceSyncMode.DISABLED, None, None)
        return cls(ffi, account.address)

    async def inbox_state(self, inbox_id: str | None = None, *,
                          count_updates: bool = True) -> InboxState:
        """An inbox's installations as the network has them now (this client's own
        inbox by default), with the identity updates it has used."""
        inbox_id = inbox_id or self.inbox_id
        with library_errors("read inbox state", inbox_id=inbox_id):
            state = await self._ffi.get_latest_inbox_state(inbox_id)
            used = None
            if count_updates:
                counts = await self._ffi.fetch_inbox_updates_count(True, [inbox_id])
                used = counts.get(inbox_id)
        return state_from_ffi(state, used)

    @property
    def inbox_id(self) -> str:
        return str(self._ffi.inbox_id())

    @property
    def installation_id(self) -> str:
        return bytes(self._ffi.installation_id()).hex()

    async def can_message(self, addresses: Sequence[str]) -> dict[str, bool]:
        """address (as given) -> whether it has an XMTP inbox."""
        # FfiXmtpClient.can_message cannot be used: the bindings build a dict keyed by the
        # unhashable FfiIdentifier and raise TypeError. One inbox lookup per address instead.
        return {a: await self.inbox_id_of(a) is not None for a in addresses}

    async def inbox_id_of(self, address: str) -> str | None:
        with library_errors("find inbox"):
            inbox_id: str | None = await self._ffi.find_inbox_id(ethereum_identifier(address))
        return inbox_id

    async def addresses_of(self, inbox_ids: Sequence[str]) -> dict[str, list[str]]:
        """inbox id -> its Ethereum addresses (lowercase), read from the network."""
        with library_errors("inbox addresses"):
            states = await self._ffi.addresses_from_inbox_id(True, list(inbox_ids))
        return {state.inbox_id: [i.identifier for i in state.account_identities
                                 if i.identifier_kind == xb.FfiIdentifierKind.ETHEREUM]
                for state in states}

    async def _require_inbox(self, address: str) -> str:
        inbox_id = await self.inbox_id_of(address)
        if inbox_id is None:
            raise WalletNotReachable(address)
        return inbox_id

    async def new_dm(self, address: str) -> Conversation:
        """Finds or creates the DM with ``address``; ``WalletNotReachable`` if not on XMTP."""
        inbox_id = await self._require_inbox(address)
        with library_errors("create DM"):
            ffi = await self._ffi.conversations().find_or_create_dm(
                inbox_id, xb.FfiCreateDmOptions(message_disappearing_settings=None))
        return Conversation(ffi)

    async def new_group(self, addresses: Sequence[str], *, name: str | None = None,
                        description: str | None = None,
                        app_data: str | None = None) -> Conversation:
        """``app_data``: a string kept in the group's metadata (the gateway's key for it)."""
        inbox_ids = [await self._require_inbox(a) for a in addresses]
        options = xb.FfiCreateGroupOptions(
            permissions=None, group_name=name, group_image_url_square=None,
            group_description=description, custom_permission_policy_set=None,
            message_disappearing_settings=None, app_data=app_data)
        with library_errors("create group"):
            ffi = await self._ffi.conversations().create_group(inbox_ids, options)
        return Conversation(ffi)

    def conversation(self, conversation_id: str) -> Conversation:
        with library_errors("find conversation"):
            return Conversation(self._ffi.conversation(bytes.fromhex(conversation_id)))

    def message(self, message_id: str) -> XmtpMessage | None:
        """A message of this installation's local database by id; None when it has no
        such message (never synced, or not an id at all)."""
        try:
            raw = bytes.fromhex(message_id)
        except ValueError:
            return None
        try:
            return _message_from_ffi(self._ffi.message(raw))
        except LIBRARY_ERRORS as exc:
            if "not found" in str(exc):  # libxmtp's StorageError::NotFound
                return None
            raise translate("find message", exc) from exc

    def conversations(self, *, created_after_ns: int | None = None,
                      limit: int | None = None) -> list[Conversation]:
        """Stored conversations, oldest first; ``created_after_ns`` and ``limit`` page
        through them (listing thousands at once holds the caller's thread for long)."""
        options = xb.FfiListConversationsOptions(
            created_after_ns=created_after_ns, created_before_ns=None,
            last_activity_before_ns=None, last_activity_after_ns=None,
            order_by=xb.FfiGroupQueryOrderBy.CREATED_AT, limit=limit, consent_states=None,
            include_duplicate_dms=False)
        with library_errors("list conversations"):
            items = self._ffi.conversations().list(options)
        return [Conversation(item.conversation()) for item in items]

    async def sync_welcomes(self) -> None:
        """Fetches new conversations (welcomes) only."""
        with library_errors("sync conversations"):
            await self._ffi.conversations().sync()

    async def sync_all(self) -> None:
        """New conversations and every conversation's new messages, whatever its consent."""
        with library_errors("sync all"):
            await self._ffi.conversations().sync_all_conversations(list(_CONSENT_TO_FFI.values()))

    async def stream_all_messages(
            self, *, consent: Sequence[Consent] | None = None) -> MessageStream:
        """Opens a stream of every conversation's new messages (incl. new conversations').

        ``consent`` limits it to conversations in those consent states (``None``: libxmtp's
        default). Use ``async with await client.stream_all_messages() as stream:
        async for message in stream: ...``.
        """
        stream = MessageStream()
        await stream.open(self._ffi.conversations(), consent)
        return stream

    async def set_inbox_consent(self, inbox_id: str, consent: Consent) -> None:
        await self._set_consent(xb.FfiConsentEntityType.INBOX_ID, inbox_id, consent)

    async def inbox_consent(self, inbox_id: str) -> Consent:
        return await self._consent(xb.FfiConsentEntityType.INBOX_ID, inbox_id)

    async def set_conversation_consent(self, conversation_id: str, consent: Consent) -> None:
        await self._set_consent(xb.FfiConsentEntityType.CONVERSATION_ID, conversation_id,
                                consent)

    async def conversation_consent(self, conversation_id: str) -> Consent:
        return await self._consent(xb.FfiConsentEntityType.CONVERSATION_ID, conversation_id)

    async def _set_consent(self, entity_type: Any, entity: str, consent: Consent) -> None:
        record = xb.FfiConsent(entity_type=entity_type, state=_CONSENT_TO_FFI[consent],
                               entity=entity)
        with library_errors("set consent"):
            await self._ffi.set_consent_states([record])

    async def _consent(self, entity_type: Any, entity: str) -> Consent:
        with library_errors("read consent"):
            return _CONSENT_FROM_FFI[await self._ffi.get_consent_state(entity_type, entity)]

    def close(self) -> None:
        """Releases the database connection (a client on a file db can then be reopened)."""
        with library_errors("close client"):
            self._ffi.release_db_connection()
