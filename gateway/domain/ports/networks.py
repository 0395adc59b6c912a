"""The networks the gateway bridges: the phone network (Twilio) and the chat network
(XMTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from gateway.domain.ids import (
    PhoneNumber,
    WalletAddress,
)
from gateway.domain.models import (
    Channel,
    Media,
)

# --- phone network (Twilio) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboundText:
    to: PhoneNumber
    from_: PhoneNumber
    channel: Channel  # sms or whatsapp; the sender adds the ``whatsapp:`` prefix
    body: str | None
    media_urls: tuple[str, ...] = ()
    status_callback: str | None = None
    content_sid: str | None = None  # WhatsApp template outside the 24-hour window
    content_variables: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class SentText:
    provider_id: str  # Twilio's MessageSid (SM… or MM…: opaque)
    status: str


class PhoneNetwork(Protocol):
    async def send(self, text: OutboundText) -> SentText:
        """Raises ``RetryableSendError`` (429/5xx/connect errors; ``retry_after`` when
        the provider said), ``PermanentSendError`` (with the provider's code), or
        ``UnknownOutcomeError`` when the request may have left (timeout, dropped
        connection)."""
    async def find_sent(
        self, *, to: PhoneNumber, from_: PhoneNumber, channel: Channel, sent_after: datetime,
        body: str | None, skip: Collection[str] = frozenset(),
    ) -> SentText | None:
        """Reconciliation: the message we may have sent, looked up at the provider; the
        earliest match whose id is not in ``skip`` (ids other deliveries already own)."""


# --- chat network (XMTP) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reference:
    """What a reaction or a reply points at: the XMTP message, and the start of what it
    said (its text, or the name of the file it carried) when the gateway's copy of the
    group has it."""

    message_id: str
    quoted: str | None = None


@dataclass(frozen=True, slots=True)
class ChatMessage:
    group_id: str
    message_id: str
    sender: WalletAddress
    sent_at_ns: int
    # The text; a reply's own text; a reaction's emoji. None when the content carries
    # none the gateway reads (an attachment, a reply with a file, an unknown type, ...).
    text: str | None
    content_type: str  # "text", "attachment", "reaction", "reply", ...
    reference: Reference | None = None  # a reaction's or a reply's
    removed: bool = False  # a reaction taken back
    # The EncodedContent as sent, for content other than text (attachments are read
    # from it): the chat network fills it in.
    encoded: bytes = field(default=b"", repr=False)
    # Its files as the media step described them before the relay records it (nothing
    # fetched): ``refused`` says why they cannot be carried, when they cannot.
    media: tuple[Media, ...] = ()
    refused: str | None = None


class ChatNetwork(Protocol):
    async def is_reachable(self, wallet: WalletAddress) -> bool: ...
    async def create_group(self, *, name: str, members: Sequence[WalletAddress],
                           key: str | None = None) -> str:
        """Creates a group of the gateway and ``members``; returns its id. Raises
        ``WalletNotReachable`` for a member not on XMTP. ``key`` names the creation for
        retries: a second creation under the same key (after a process died making the
        group) returns the group made the first time, never a second one."""
    async def add_members(self, group_id: str, members: Sequence[WalletAddress]) -> None: ...
    async def remove_members(self, group_id: str, members: Sequence[WalletAddress]) -> None: ...
    async def rename_group(self, group_id: str, name: str) -> None:
        """Sets the group's name, as its members see it."""
    async def send(self, group_id: str, text: str, *, key: str | None = None) -> str:
        """Sends text into the group; returns the message id. ``key`` names the send
        for retries: a second send with the same key (after an error whose outcome was
        unknown) publishes the message prepared the first time, never a second one."""
    async def send_encoded(self, group_id: str, content: Callable[[], Awaitable[bytes]], *,
                           key: str) -> str:
        """Sends any EncodedContent (an attachment, a remote attachment) into the group,
        keyed as ``send`` is: when a message was prepared under ``key`` already, that one
        is published and ``content`` is not called (it would make a new one: a remote
        attachment's upload would replace the file the prepared message names).
        Otherwise ``content()`` gives the bytes, which are prepared, logged under
        ``key``, then published. Errors ``content`` raises go to the caller."""
    def messages(
        self, high_water: Callable[[str], Awaitable[int | None]],
    ) -> AsyncIterator[ChatMessage]:
        """Messages from others in the gateway's groups: first every message newer than
        ``high_water(group_id)`` (catch-up), then live ones; after a stream failure it
        catches up again before streaming. The gateway's own messages are left out.
        Messages may repeat across restarts; the store's (source, external_id)
        uniqueness absorbs that."""
