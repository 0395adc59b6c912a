"""The store: one transaction at a time (``StoreTx``), opened by ``Store``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from gateway.domain.ids import (
    ConversationId,
    DeliveryId,
    MessageId,
    ParticipantId,
    PhoneNumber,
    WalletAddress,
)
from gateway.domain.models import (
    Channel,
    Consent,
    Contact,
    Conversation,
    ConversationState,
    Delivery,
    DeliveryJob,
    DeliveryState,
    Event,
    Lease,
    Media,
    Message,
    MessageSource,
    Participant,
)

# --- store -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewParticipant:
    conversation_id: ConversationId
    channel: Channel
    identity: WalletAddress | None = None
    address: PhoneNumber | None = None
    proxy_address: PhoneNumber | None = None
    consent: Consent = Consent.UNKNOWN
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NewMessage:
    conversation_id: ConversationId
    author: ParticipantId | None
    body: str | None
    source: MessageSource
    external_id: str | None = None
    media: tuple[Media, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StatusChange:
    delivery: Delivery  # as it is now
    moved: bool  # False when the status was late or repeated news


class StoreTx(Protocol):
    """One database transaction. Everything done through it commits together when the
    ``Store.transaction()`` block exits normally and rolls back if it raises."""

    # conversations
    async def create_conversation(
        self, *, rule: str | None, friendly_name: str | None = None,
        unique_name: str | None = None, attributes: Mapping[str, Any] | None = None,
        now: datetime,
    ) -> Conversation:
        """Raises ``Conflict`` when unique_name is taken."""
    async def get_conversation(self, conversation_id: ConversationId) -> Conversation | None: ...
    async def get_conversation_by_unique_name(self, unique_name: str) -> Conversation | None: ...
    async def get_conversation_by_group(self, xmtp_group_id: str) -> Conversation | None: ...
    async def set_conversation_group(
        self, conversation_id: ConversationId, xmtp_group_id: str) -> None:
        """Raises ``Conflict`` when the group belongs to another conversation, or this
        conversation already has another group (a group is never replaced)."""
    async def set_conversation_state(
        self, conversation_id: ConversationId, state: ConversationState, *, now: datetime,
    ) -> Conversation:
        """Closing or deactivating frees the conversation's (address, proxy) pairs."""

    # participants
    async def add_participant(self, new: NewParticipant, *, now: datetime) -> Participant:
        """Raises ``ActivePairConflict`` when a non-chat participant's (address, proxy)
        pair is already in an active conversation, ``Conflict`` when the same wallet is
        already an active participant of this conversation."""
    async def get_participant(self, participant_id: ParticipantId) -> Participant | None: ...
    async def list_participants(
        self, conversation_id: ConversationId, *, include_left: bool = False,
    ) -> list[Participant]: ...
    async def find_phone_participant(
        self, address: PhoneNumber, proxy_address: PhoneNumber,
        channel: Channel = Channel.SMS,
    ) -> Participant | None:
        """The participant with this pair on this channel in an *active* conversation,
        if any (a phone's SMS and its WhatsApp are separate addresses)."""
    async def remove_participant(self, participant_id: ParticipantId, *, now: datetime) -> None: ...
    async def set_participant_consent(
        self, participant_id: ParticipantId, consent: Consent) -> None: ...

    # messages
    async def add_message(self, new: NewMessage, *, now: datetime) -> Message:
        """Appends with the next gap-free index of its conversation and updates the
        conversation's last_message_at. Raises ``DuplicateMessage`` when (source,
        external_id) was already recorded — the caller then answers as if it had just
        recorded it. The body is encrypted at rest."""
    async def get_message(self, message_id: MessageId) -> Message | None: ...
    async def find_message(self, source: MessageSource, external_id: str) -> Message | None: ...

    # deliveries (the outbox)
    async def add_delivery(
        self, message_id: MessageId, participant_id: ParticipantId, channel: Channel, *,
        lane: str, position: int, now: datetime, not_before: datetime | None = None,
        holder: str | None = None, lease_until: datetime | None = None,
    ) -> Delivery:
        """A pending delivery in ``lane`` at ``position``; or, with ``holder`` and
        ``lease_until``, one claimed at birth (``sending``, attempt 1, leased to
        ``holder``) for that process's engine to take once the transaction commits, as if
        ``claim_deliveries`` had returned it. Order comes first: while an earlier delivery
        of the lane is open and not held by ``holder``, the new one stays pending (the
        returned delivery's state tells which)."""
    async def get_delivery(self, delivery_id: DeliveryId) -> Delivery | None: ...
    async def list_deliveries(self, message_id: MessageId) -> list[Delivery]: ...
    async def claim_deliveries(
        self, channels: Sequence[Channel], *, holder: str, now: datetime,
        lease_until: datetime, limit: int,
    ) -> list[DeliveryJob]:
        """Pending deliveries due at ``now`` on these channels, each the first open one of
        its lane (every earlier open one of the lane is held by ``holder``) and, on XMTP,
        the first open one of its message, move to ``sending`` with attempts + 1, a new
        lease token and a lease held by ``holder``; on PostgreSQL rows locked by another
        worker are skipped (FOR UPDATE SKIP LOCKED), so no row is ever claimed twice."""
    async def open_in_lane(self, lane: str) -> list[Delivery]:
        """The lane's deliveries not yet done (pending, sending, unknown), in order."""
    async def next_due(self, channels: Sequence[Channel], *, now: datetime) -> datetime | None:
        """When the soonest pending delivery on these channels falls due after ``now``, if
        any (it may then still wait behind an earlier one of its lane)."""
    async def claim_reconcilable(
        self, channels: Sequence[Channel], *, holder: str, now: datetime,
        lease_until: datetime, limit: int,
    ) -> list[DeliveryJob]:
        """Deliveries on these channels whose outcome is unknown: state ``unknown`` and
        not leased, or ``sending``/``unknown`` under a lease that ran out or whose holder
        stopped beating (it died between claim and result). Re-leased to ``holder`` with
        a new token, in state ``unknown``, in lane order. Each channel reconciles its
        own: a phone's by looking the message up, XMTP's by a keyed re-send."""
    async def release_held(self, holder: str, *, now: datetime) -> list[Delivery]:
        """A process starting again as ``holder`` (its data directory's lock proves the
        previous life is over): what that life held is released at once, ``sending``
        becoming ``unknown``, unleased, for the reconciler. Returns the released ones."""
    async def renew_lease(self, delivery_id: DeliveryId, lease: Lease, *,
                          until: datetime) -> Lease | None:
        """Extends ``lease`` to ``until`` while the row still holds it (nothing visible
        changes); None when another claim took it meanwhile."""
    async def beat(self, holder: str, *, description: str, now: datetime,
                   alive_until: datetime) -> None:
        """``holder`` is alive until ``alive_until`` (its heartbeat)."""
    # The mark_* results take the ``lease`` their caller claimed the delivery with: given,
    # the write happens only while the row still holds that lease's token, and
    # ``LeaseLost`` is raised (nothing written) once another claim took it. Without it the
    # write is unconditional (a delivery nobody leases: an XMTP sibling, a status).
    async def mark_sent(
        self, delivery_id: DeliveryId, *, provider_id: str, now: datetime,
        lease: Lease | None = None,
    ) -> Delivery:
        """Records the provider's id, then applies any status callback that arrived for
        that id before this call (kept by ``apply_status``)."""
    async def mark_retry(
        self, delivery_id: DeliveryId, *, next_attempt_at: datetime, error_code: int | None,
        error_message: str | None, now: datetime, lease: Lease | None = None,
    ) -> Delivery:
        """Back to ``pending``, due again at ``next_attempt_at``."""
    async def hand_back(self, delivery_id: DeliveryId, *, due: datetime, now: datetime,
                        lease: Lease | None) -> Delivery:
        """Back to ``pending``, due at ``due``, without having been tried: the claim's
        attempt is not counted, the last real error stays."""
    async def mark_failed(
        self, delivery_id: DeliveryId, *, error_code: int | None, error_message: str | None,
        now: datetime, lease: Lease | None = None,
    ) -> Delivery: ...
    async def mark_unknown(self, delivery_id: DeliveryId, *, now: datetime,
                           lease: Lease | None = None) -> Delivery: ...
    async def apply_status(
        self, provider_id: str, state: DeliveryState, *, error_code: int | None,
        error_message: str | None, now: datetime,
    ) -> Delivery | None:
        """``record_status``, answering just the delivery as it is now."""
    async def record_status(
        self, provider_id: str, state: DeliveryState, *, error_code: int | None,
        error_message: str | None, now: datetime,
    ) -> StatusChange | None:
        """A provider status callback. Moves the delivery forward only (by
        ``DeliveryState.rank``; delivered never goes back to sent), and tells whether this
        callback moved it (a provider may send the same callback twice: only the first
        moves it). When no delivery has this provider id yet, the status is kept and
        applied by ``mark_sent``; returns None then."""
    async def provider_ids_sent_to(
        self, address: PhoneNumber, proxy_address: PhoneNumber, *, since: datetime,
        besides: DeliveryId,
    ) -> set[str]:
        """Provider ids recorded on deliveries other than ``besides`` to ``address`` from
        ``proxy_address`` (in any conversation), among those updated since ``since``: a
        reconciliation skips them, so a repeated text is never taken for an earlier one."""

    # contacts (per phone and proxy number)
    # a contact is a phone on one of our numbers on one channel: SMS and WhatsApp apart
    async def get_contact(
        self, address: PhoneNumber, proxy_address: PhoneNumber,
        channel: Channel = Channel.SMS) -> Contact | None: ...
    async def record_inbound(
        self, address: PhoneNumber, proxy_address: PhoneNumber,
        channel: Channel = Channel.SMS, *, now: datetime,
    ) -> Contact:
        """The phone texted us: sets first_inbound_at once, last_inbound_at always."""
    async def set_contact_consent(
        self, address: PhoneNumber, proxy_address: PhoneNumber, consent: Consent,
        channel: Channel = Channel.SMS, *, now: datetime,
    ) -> Contact: ...

    # quotas
    async def count_outbound(
        self, *, since: datetime, proxy: PhoneNumber, channels: Sequence[Channel],
        address: PhoneNumber | None = None,
    ) -> int:
        """Deliveries to phones created since ``since`` from our number ``proxy`` on
        ``channels`` (a rule's number and channels: what the rule sent, in conversations
        it made or the API made on its number alike), to ``address`` when given: texts
        that were or will be sent. The gateway's own notices and deliveries that failed
        without reaching the provider (refused, say) are not counted."""

    # chat high-water marks (per XMTP group: the last message's sent time in ns)
    async def get_cursor(self, key: str) -> int | None: ...
    async def set_cursor(self, key: str, value: int) -> None:
        """Only ever moves a cursor forward."""
    async def all_cursors(self) -> dict[str, int]:
        """Every cursor at once (the chat stream's catch-up reads them when it opens)."""

    # the event log
    async def add_event(
        self, type: str, *, conversation_id: ConversationId | None,
        data: Mapping[str, Any], now: datetime,
    ) -> Event: ...
    async def list_events(
        self, *, after: int, limit: int, conversation_id: ConversationId | None = None,
    ) -> list[Event]: ...


class Store(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[StoreTx]: ...
    async def ping(self) -> None:
        """Raises ``StoreError`` when the database cannot be reached."""
    async def close(self) -> None: ...
