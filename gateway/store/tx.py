"""``StoreTx`` over one SQLAlchemy connection in one transaction.

Unique constraints are hit with ``INSERT … ON CONFLICT DO NOTHING`` and a look-up, never
with a caught IntegrityError: on PostgreSQL an error aborts the whole transaction, and a
caller that catches ``DuplicateMessage`` must still be able to use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.ids import (
    ConversationId,
    DeliveryId,
    MessageId,
    ParticipantId,
    PhoneNumber,
    new_conversation_id,
    new_delivery_id,
    new_message_id,
    new_participant_id,
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
    Message,
    MessageSource,
    Participant,
)
from gateway.domain.ports import NewMessage, NewParticipant, StatusChange
from gateway.errors import (
    ActivePairConflict,
    BadRequest,
    Conflict,
    DuplicateMessage,
    LeaseLost,
    NotFound,
    StoreError,
)
from gateway.store import engine, rows, statements
from gateway.store.crypto import ContentCipher
from gateway.store.inline import InlineConnection
from gateway.store.tables import (
    conversations,
    events,
    messages,
    participants,
    pending_statuses,
)

EVENT_LOG_LOCK = "gateway.events"


def _pair(address: str, proxy_address: str, channel: Channel | str) -> str:
    """A phone participant's key while active: SMS and WhatsApp apart (Twilio's own
    addresses differ: "+1…" and "whatsapp:+1…")."""
    pair = f"{address} {proxy_address}"
    return f"whatsapp:{pair}" if channel == Channel.WHATSAPP else pair


def _held(lease: Lease) -> dict[str, Any]:
    """The parameters a fenced write checks: the lease's token and holder."""
    return {"held_token": lease.token, "held_by": lease.holder}


def _split(row: sa.Row[Any], parts: Sequence[sa.FromClause]) -> list[dict[str, Any]]:
    """A joined row's columns back into one mapping per table, by position."""
    split = []
    start = 0
    for part in parts:
        names = part.c.keys()
        split.append(dict(zip(names, row[start:start + len(names)], strict=True)))
        start += len(names)
    return split


class SqlStoreTx:
    def __init__(self, connection: AsyncConnection | InlineConnection,
                 cipher: ContentCipher) -> None:
        self._conn = connection
        self._cipher = cipher
        self._postgres = connection.dialect.name == "postgresql"
        self._upserts = statements.UPSERTS[connection.dialect.name]

    @property
    def connection(self) -> AsyncConnection | InlineConnection:
        """The transaction's connection, for queries that belong in the same transaction
        but not in the ``StoreTx`` port (the API's rename and delete)."""
        return self._conn

    # --- helpers ---------------------------------------------------------------------

    def _insert(self, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
        return postgresql.insert(table) if self._postgres else sqlite.insert(table)

    async def _one(self, query: sa.Executable,
                   parameters: Mapping[str, Any] | None = None) -> Mapping[Any, Any] | None:
        found = await self._all(query, parameters)
        return found[0] if found else None

    async def _all(self, query: sa.Executable,
                   parameters: Mapping[str, Any] | None = None) -> Sequence[Mapping[Any, Any]]:
        if isinstance(self._conn, InlineConnection):
            return await self._conn.rows(query, parameters)
        return (await self._conn.execute(query, parameters)).mappings().all()

    async def _lock(self, name: str) -> None:
        # SQLite needs none: BEGIN IMMEDIATE already made this the only writer
        if self._postgres:
            await self._conn.execute(statements.ADVISORY_LOCK,
                                     {"key": engine.advisory_key(name)})

    # --- conversations ---------------------------------------------------------------

    async def create_conversation(
        self, *, rule: str | None, friendly_name: str | None = None,
        unique_name: str | None = None, attributes: Mapping[str, Any] | None = None,
        now: datetime,
    ) -> Conversation:
        inserted = await self._one(self._upserts.add_conversation, {
            "id": new_conversation_id(), "unique_name": unique_name,
            "friendly_name": friendly_name, "attributes": dict(attributes or {}),
            "state": ConversationState.ACTIVE.value, "rule": rule, "xmtp_group_id": None,
            "next_message_index": 0, "created_at": now, "updated_at": now,
            "last_message_at": None})
        if inserted is None:
            raise Conflict(f"a conversation named {unique_name!r} already exists")
        return rows.conversation(inserted)

    async def get_conversation(self, conversation_id: ConversationId) -> Conversation | None:
        row = await self._one(statements.GET_CONVERSATION, {"id": conversation_id})
        return rows.conversation(row) if row else None

    async def get_conversation_by_unique_name(self, unique_name: str) -> Conversation | None:
        row = await self._one(statements.GET_CONVERSATION_BY_UNIQUE_NAME,
                              {"unique_name": unique_name})
        return rows.conversation(row) if row else None

    async def get_conversation_by_group(self, xmtp_group_id: str) -> Conversation | None:
        row = await self._one(statements.GET_CONVERSATION_BY_GROUP,
                              {"xmtp_group_id": xmtp_group_id})
        return rows.conversation(row) if row else None

    async def set_conversation_group(
        self, conversation_id: ConversationId, xmtp_group_id: str,
    ) -> None:
        holder = await self.get_conversation_by_group(xmtp_group_id)
        if holder is not None and holder.id != conversation_id:
            raise Conflict(f"group {xmtp_group_id} already belongs to conversation {holder.id}")
        try:
            # a savepoint: a concurrent claim of the group must not abort the transaction
            async with self._conn.begin_nested():
                result = await self._conn.execute(
                    statements.SET_CONVERSATION_GROUP,
                    {"conversation": conversation_id, "group": xmtp_group_id})
        except sa.exc.IntegrityError:
            raise Conflict(f"group {xmtp_group_id} already belongs to a conversation") from None
        if result.rowcount == 0:
            current = await self.get_conversation(conversation_id)
            if current is None:
                raise NotFound(f"no conversation {conversation_id}")
            raise Conflict(f"conversation {conversation_id} already has group "
                           f"{current.xmtp_group_id}")

    async def set_conversation_state(
        self, conversation_id: ConversationId, state: ConversationState, *, now: datetime,
    ) -> Conversation:
        current = await self._locked_conversation(conversation_id)
        was_active = current["state"] == ConversationState.ACTIVE.value
        if state is ConversationState.ACTIVE and not was_active:
            await self._reclaim_pairs(conversation_id)
        elif state is not ConversationState.ACTIVE and was_active:
            await self._conn.execute(
                participants.update().where(participants.c.conversation_id == conversation_id)
                .values(active_pair=None))
        row = await self._one(
            conversations.update().where(conversations.c.id == conversation_id)
            .values(state=state.value, updated_at=now).returning(*conversations.c))
        assert row is not None  # locked above
        return rows.conversation(row)

    async def _locked_conversation(self, conversation_id: ConversationId) -> Mapping[Any, Any]:
        row = await self._one(statements.LOCK_CONVERSATION, {"id": conversation_id})
        if row is None:
            raise NotFound(f"no conversation {conversation_id}")
        return row

    async def _reclaim_pairs(self, conversation_id: ConversationId) -> None:
        """A conversation becomes active again: its phones take their pairs back, unless
        another active conversation took one meanwhile."""
        members = await self._all(participants.select().where(
            participants.c.conversation_id == conversation_id,
            participants.c.left_at.is_(None), participants.c.address.is_not(None)))
        for member in members:
            pair = _pair(member["address"], member["proxy_address"], member["channel"])
            holder = await self._pair_holder(pair)
            if holder is not None:
                raise ActivePairConflict(holder)
            # a savepoint, so a concurrent claim of the same pair cannot abort everything
            try:
                async with self._conn.begin_nested():
                    await self._conn.execute(
                        participants.update().where(participants.c.id == member["id"])
                        .values(active_pair=pair))
            except sa.exc.IntegrityError:
                raise ActivePairConflict(await self._pair_holder(pair) or "?") from None

    async def _pair_holder(self, pair: str) -> str | None:
        row = await self._one(statements.PAIR_HOLDER, {"active_pair": pair})
        return row["conversation_id"] if row else None

    # --- participants ----------------------------------------------------------------

    async def add_participant(self, new: NewParticipant, *, now: datetime) -> Participant:
        if new.channel is Channel.XMTP:
            if new.identity is None or new.address is not None:
                raise BadRequest("a chat participant has an identity and no address")
        elif new.address is None or new.proxy_address is None or new.identity is not None:
            raise BadRequest("a phone participant has an address and a proxy address")
        conversation = await self._locked_conversation(new.conversation_id)
        active = conversation["state"] == ConversationState.ACTIVE.value
        pair = (_pair(new.address, new.proxy_address, new.channel)
                if new.address is not None and new.proxy_address is not None else None)
        inserted = await self._one(self._upserts.add_participant, {
            "id": new_participant_id(), "conversation_id": new.conversation_id,
            "channel": new.channel.value, "identity": new.identity, "address": new.address,
            "proxy_address": new.proxy_address, "consent": new.consent.value,
            "attributes": dict(new.attributes), "joined_at": now, "left_at": None,
            "active_pair": pair if active else None, "active_wallet": new.identity})
        if inserted is not None:
            return rows.participant(inserted)
        if pair is not None and (holder := await self._pair_holder(pair)) is not None:
            raise ActivePairConflict(holder)
        raise Conflict(f"{new.identity} is already in conversation {new.conversation_id}")

    async def get_participant(self, participant_id: ParticipantId) -> Participant | None:
        row = await self._one(statements.GET_PARTICIPANT, {"id": participant_id})
        return rows.participant(row) if row else None

    async def list_participants(
        self, conversation_id: ConversationId, *, include_left: bool = False,
    ) -> list[Participant]:
        query = (statements.ALL_PARTICIPANTS if include_left
                 else statements.CURRENT_PARTICIPANTS)
        found = await self._all(query, {"conversation_id": conversation_id})
        return [rows.participant(row) for row in found]

    async def find_phone_participant(
        self, address: PhoneNumber, proxy_address: PhoneNumber,
        channel: Channel = Channel.SMS,
    ) -> Participant | None:
        row = await self._one(statements.PHONE_PARTICIPANT,
                              {"active_pair": _pair(address, proxy_address, channel)})
        return rows.participant(row) if row else None

    async def remove_participant(self, participant_id: ParticipantId, *, now: datetime) -> None:
        member = await self.get_participant(participant_id)
        if member is None:
            raise NotFound(f"no participant {participant_id}")
        if member.left_at is None:
            await self._conn.execute(
                participants.update().where(participants.c.id == participant_id)
                .values(left_at=now, active_pair=None, active_wallet=None))

    async def set_participant_consent(
        self, participant_id: ParticipantId, consent: Consent,
    ) -> None:
        result = await self._conn.execute(
            participants.update().where(participants.c.id == participant_id)
            .values(consent=consent.value))
        if result.rowcount == 0:
            raise NotFound(f"no participant {participant_id}")

    # --- messages --------------------------------------------------------------------

    async def add_message(self, new: NewMessage, *, now: datetime) -> Message:
        index = await self._conn.scalar(statements.TAKE_MESSAGE_INDEX,
                                        {"conversation": new.conversation_id, "now": now})
        if index is None:
            raise NotFound(f"no conversation {new.conversation_id}")
        inserted = await self._one(self._upserts.add_message, {
            "id": new_message_id(), "conversation_id": new.conversation_id, "index": index,
            "author_id": new.author, "attributes": dict(new.attributes),
            "source": new.source.value, "external_id": new.external_id, "created_at": now,
            **rows.seal_content(self._cipher, new.body, new.media)})
        if inserted is not None:
            return rows.message(inserted, self._cipher)
        await self._give_back_index(new.conversation_id)
        if new.external_id is not None:
            existing = await self._one(sa.select(messages.c.id).where(
                messages.c.source == new.source.value,
                messages.c.external_id == new.external_id))
            if existing is not None:
                raise DuplicateMessage(existing["id"])
        raise StoreError(f"message index {index} of {new.conversation_id} is taken")

    async def _give_back_index(self, conversation_id: ConversationId) -> None:
        """Undoes the index taken for a message that turned out to be a duplicate, so a
        caller that catches DuplicateMessage and carries on leaves no gap."""
        latest = (sa.select(sa.func.max(messages.c.created_at))
                  .where(messages.c.conversation_id == conversation_id).scalar_subquery())
        await self._conn.execute(
            conversations.update().where(conversations.c.id == conversation_id)
            .values(next_message_index=conversations.c.next_message_index - 1,
                    last_message_at=latest))

    async def get_message(self, message_id: MessageId) -> Message | None:
        row = await self._one(statements.GET_MESSAGE, {"id": message_id})
        return rows.message(row, self._cipher) if row else None

    async def reseal_messages(self, *, limit: int) -> int:
        """Re-encrypts messages sealed under a key other than the active one."""
        stale = await self._all(
            messages.select().where(messages.c.key_id.is_not(None),
                                    messages.c.key_id != self._cipher.active_key)
            .limit(limit).with_for_update(skip_locked=True))
        for row in stale:
            message = rows.message(row, self._cipher)
            await self._conn.execute(
                messages.update().where(messages.c.id == message.id)
                .values(**rows.seal_content(self._cipher, message.body, message.media)))
        return len(stale)

    async def find_message(self, source: MessageSource, external_id: str) -> Message | None:
        row = await self._one(statements.FIND_MESSAGE,
                              {"source": source.value, "external_id": external_id})
        return rows.message(row, self._cipher) if row else None

    # --- deliveries ------------------------------------------------------------------

    async def add_delivery(
        self, message_id: MessageId, participant_id: ParticipantId, channel: Channel, *,
        lane: str, position: int, now: datetime, not_before: datetime | None = None,
        holder: str | None = None, lease_until: datetime | None = None,
    ) -> Delivery:
        wait = await self._one(statements.LANE_WAIT, {"lane": lane, "holder": holder or ""})
        assert wait is not None  # an aggregate: one row
        # order first: not claimed while an earlier one of the lane is open elsewhere
        claimed = holder is not None and lease_until is not None and not wait["blocking"]
        due = not_before or now
        if wait["due"] is not None and wait["due"] > due:
            due = wait["due"]  # not before the lane's earlier ones (LANE_BEHIND)
        row = await self._one(statements.ADD_DELIVERY, {
            "id": new_delivery_id(), "message_id": message_id, "participant_id": participant_id,
            "channel": channel.value,
            "state": (DeliveryState.SENDING if claimed else DeliveryState.PENDING).value,
            "attempts": 1 if claimed else 0, "next_attempt_at": due,
            "lease_until": lease_until if claimed else None,
            "holder": holder if claimed else None, "lease_token": 1 if claimed else 0,
            "lane": lane, "position": position, "provider_id": None,
            "error_code": None, "error_message": None, "created_at": now, "updated_at": now})
        assert row is not None
        return rows.delivery(row)

    async def get_delivery(self, delivery_id: DeliveryId) -> Delivery | None:
        row = await self._one(statements.GET_DELIVERY, {"id": delivery_id})
        return rows.delivery(row) if row else None

    async def list_deliveries(self, message_id: MessageId) -> list[Delivery]:
        found = await self._all(statements.MESSAGE_DELIVERIES, {"message_id": message_id})
        return [rows.delivery(row) for row in found]

    async def claim_deliveries(
        self, channels: Sequence[Channel], *, holder: str, now: datetime,
        lease_until: datetime, limit: int,
    ) -> list[DeliveryJob]:
        if limit <= 0 or not channels:
            return []
        due = await self._all(statements.DUE_DELIVERIES, {
            "channels": [c.value for c in channels], "holder": holder, "now": now,
            "limit": limit})
        return await self._lease(statements.LEASE_FOR_SENDING, [row["id"] for row in due],
                                 state=DeliveryState.SENDING, holder=holder, now=now,
                                 lease_until=lease_until)

    async def open_in_lane(self, lane: str) -> list[Delivery]:
        found = await self._all(statements.LANE_OPEN, {"lane": lane})
        return [rows.delivery(row) for row in found]

    async def next_due(self, channels: Sequence[Channel], *, now: datetime) -> datetime | None:
        row = await self._one(statements.NEXT_DUE, {"channels": [c.value for c in channels],
                                                    "now": now})
        return row["due"] if row else None

    async def claim_reconcilable(
        self, channels: Sequence[Channel], *, holder: str, now: datetime,
        lease_until: datetime, limit: int,
    ) -> list[DeliveryJob]:
        if limit <= 0 or not channels:
            return []
        due = await self._all(statements.RECONCILABLE, {
            "channels": [c.value for c in channels], "now": now, "limit": limit})
        # an abandoned send's outcome is unknown from now on, whoever holds it next
        return await self._lease(statements.LEASE, [row["id"] for row in due],
                                 state=DeliveryState.UNKNOWN, holder=holder, now=now,
                                 lease_until=lease_until)

    async def release_held(self, holder: str, *, now: datetime) -> list[Delivery]:
        found = await self._all(statements.RELEASE_HELD, {"held_by": holder, "now": now})
        return [rows.delivery(row) for row in found]

    async def renew_lease(self, delivery_id: DeliveryId, lease: Lease, *,
                          until: datetime) -> Lease | None:
        result = await self._conn.execute(statements.RENEW_LEASE, {
            "delivery": delivery_id, **_held(lease), "until": until})
        return replace(lease, until=until) if result.rowcount else None

    async def beat(self, holder: str, *, description: str, now: datetime,
                   alive_until: datetime) -> None:
        await self._conn.execute(self._upserts.beat, {
            "id": holder, "description": description[:255], "started_at": now,
            "alive_until": alive_until})

    async def provider_ids_sent_to(
        self, address: PhoneNumber, proxy_address: PhoneNumber, *, since: datetime,
        besides: DeliveryId,
    ) -> set[str]:
        found = await self._all(statements.PROVIDER_IDS_SENT_TO, {
            "address": address, "proxy_address": proxy_address, "since": since,
            "besides": besides})
        return {row["provider_id"] for row in found}

    async def _lease(self, lease: sa.Update, ids: list[str], *, state: DeliveryState,
                     holder: str, now: datetime, lease_until: datetime) -> list[DeliveryJob]:
        if not ids:
            return []
        await self._conn.execute(lease, {"ids": ids, "new_state": state.value,
                                         "lease": lease_until, "holder": holder, "now": now})
        return await self._jobs(ids)

    async def _jobs(self, ids: list[str]) -> list[DeliveryJob]:
        found = (await self._conn.execute(statements.JOBS, {"ids": ids})).all()
        messages_seen: dict[str, Message] = {}  # a message to several wallets opens once
        by_delivery = {}
        for row in found:
            delivery, message, target, conversation, author = _split(row, statements.JOB_PARTS)
            opened = messages_seen.get(message["id"])
            if opened is None:
                opened = messages_seen[message["id"]] = rows.message(message, self._cipher)
            by_delivery[delivery["id"]] = DeliveryJob(
                delivery=rows.delivery(delivery), message=opened,
                target=rows.participant(target), conversation=rows.conversation(conversation),
                author=rows.participant(author) if author["id"] is not None else None)
        return [by_delivery[delivery_id] for delivery_id in ids]

    async def _update_delivery(self, delivery_id: DeliveryId, *, lease: Lease | None = None,
                               **values: Any) -> Delivery:
        return rows.delivery(await self._update_delivery_row(delivery_id, lease=lease,
                                                             **values))

    async def _update_delivery_row(self, delivery_id: DeliveryId, *,
                                   lease: Lease | None = None,
                                   **values: Any) -> Mapping[str, Any]:
        if lease is None:
            row = await self._one(statements.UPDATE_DELIVERY,
                                  {"delivery": delivery_id, **values})
        else:
            row = await self._one(statements.UPDATE_LEASED_DELIVERY, {
                "delivery": delivery_id, **_held(lease), **values})
        if row is None:
            raise await self._missing(delivery_id, lease)
        return row

    async def _missing(self, delivery_id: DeliveryId,
                       lease: Lease | None) -> NotFound | LeaseLost:
        """Why an update of ``delivery_id`` matched no row."""
        if lease is not None and await self._one(statements.GET_DELIVERY, {"id": delivery_id}):
            return LeaseLost(delivery_id)
        return NotFound(f"no delivery {delivery_id}")

    async def mark_sent(
        self, delivery_id: DeliveryId, *, provider_id: str, now: datetime,
        lease: Lease | None = None,
    ) -> Delivery:
        # the same lock as record_status, so a callback racing this call either sees the
        # provider id or leaves its status for us to find below
        await self._lock(f"provider:{provider_id}")
        values = {"delivery": delivery_id, "provider": provider_id, "now": now}
        if lease is None:
            row = await self._one(statements.MARK_SENT, values)
        else:
            row = await self._one(statements.MARK_SENT_LEASED, {**values, **_held(lease)})
        if row is None:
            raise await self._missing(delivery_id, lease)
        delivery = rows.delivery(row)
        early = await self._one(statements.TAKE_EARLY_STATUS, {"provider_id": provider_id})
        if early is not None:
            delivery = await self._advance(delivery, DeliveryState(early["state"]),
                                           error_code=early["error_code"],
                                           error_message=early["error_message"], now=now)
        return delivery

    async def mark_retry(
        self, delivery_id: DeliveryId, *, next_attempt_at: datetime, error_code: int | None,
        error_message: str | None, now: datetime, lease: Lease | None = None,
    ) -> Delivery:
        return await self._waiting(await self._update_delivery_row(
            delivery_id, lease=lease, state=DeliveryState.PENDING.value,
            next_attempt_at=next_attempt_at, error_code=error_code,
            error_message=error_message, updated_at=now, **statements.UNLEASED))

    async def hand_back(self, delivery_id: DeliveryId, *, due: datetime, now: datetime,
                        lease: Lease | None) -> Delivery:
        values = {"delivery": delivery_id, "state": DeliveryState.PENDING.value,
                  "next_attempt_at": due, "updated_at": now, **statements.UNLEASED}
        if lease is None:
            row = await self._one(statements.HAND_BACK, values)
        else:
            row = await self._one(statements.HAND_BACK_LEASED, {**values, **_held(lease)})
        if row is None:
            raise await self._missing(delivery_id, lease)
        return await self._waiting(row)

    async def _waiting(self, row: Mapping[str, Any]) -> Delivery:
        """A delivery back in the outbox until its ``next_attempt_at``, but not before an
        earlier pending one of its lane (``statements.LANE_AHEAD``); the pending ones
        behind it wait as long (``statements.LANE_BEHIND``)."""
        ahead = await self._one(statements.LANE_AHEAD, {
            "of_lane": row["lane"], "before_position": row["position"]})
        if ahead is not None and ahead["due"] is not None and ahead["due"] > row["next_attempt_at"]:
            moved = await self._one(statements.SET_DUE, {"delivery": row["id"],
                                                         "due": ahead["due"]})
            assert moved is not None  # the row was just written in this transaction
            row = moved
        await self._conn.execute(statements.LANE_BEHIND, {
            "of_lane": row["lane"], "after_position": row["position"],
            "due": row["next_attempt_at"]})
        return rows.delivery(row)

    async def mark_failed(
        self, delivery_id: DeliveryId, *, error_code: int | None, error_message: str | None,
        now: datetime, lease: Lease | None = None,
    ) -> Delivery:
        return await self._update_delivery(
            delivery_id, lease=lease, state=DeliveryState.FAILED.value, next_attempt_at=None,
            error_code=error_code, error_message=error_message, updated_at=now,
            **statements.UNLEASED)

    async def mark_unknown(self, delivery_id: DeliveryId, *, now: datetime,
                           lease: Lease | None = None) -> Delivery:
        # no lease: the reconciler may take it at once
        return await self._update_delivery(
            delivery_id, lease=lease, state=DeliveryState.UNKNOWN.value, next_attempt_at=None,
            updated_at=now, **statements.UNLEASED)

    async def apply_status(
        self, provider_id: str, state: DeliveryState, *, error_code: int | None,
        error_message: str | None, now: datetime,
    ) -> Delivery | None:
        change = await self.record_status(provider_id, state, error_code=error_code,
                                          error_message=error_message, now=now)
        return change.delivery if change else None

    async def record_status(
        self, provider_id: str, state: DeliveryState, *, error_code: int | None,
        error_message: str | None, now: datetime,
    ) -> StatusChange | None:
        await self._lock(f"provider:{provider_id}")
        found = await self._all(statements.PROVIDER_DELIVERIES, {"provider_id": provider_id})
        if not found:
            await self._keep_early_status(provider_id, state, error_code=error_code,
                                          error_message=error_message, now=now)
            return None
        changes = []
        for row in found:
            before = rows.delivery(row)
            after = await self._advance(before, state, error_code=error_code,
                                        error_message=error_message, now=now)
            changes.append(StatusChange(after, moved=after.state is not before.state))
        return changes[0]

    async def _advance(self, delivery: Delivery, state: DeliveryState, *,
                       error_code: int | None, error_message: str | None,
                       now: datetime) -> Delivery:
        if state.rank <= delivery.state.rank:
            return delivery  # late or repeated news: delivered never goes back to sent
        values: dict[str, Any] = {"state": state.value, "updated_at": now,
                                  **statements.UNLEASED}
        if error_code is not None or error_message is not None:
            values |= {"error_code": error_code, "error_message": error_message}
        return await self._update_delivery(delivery.id, **values)

    async def _keep_early_status(self, provider_id: str, state: DeliveryState, *,
                                 error_code: int | None, error_message: str | None,
                                 now: datetime) -> None:
        insert = self._insert(pending_statuses).values(
            provider_id=provider_id, state=state.value, rank=state.rank,
            error_code=error_code, error_message=error_message, received_at=now)
        await self._conn.execute(insert.on_conflict_do_update(
            index_elements=[pending_statuses.c.provider_id],
            set_={"state": insert.excluded.state, "rank": insert.excluded.rank,
                  "error_code": insert.excluded.error_code,
                  "error_message": insert.excluded.error_message,
                  "received_at": insert.excluded.received_at},
            where=pending_statuses.c.rank < insert.excluded.rank))

    # --- contacts --------------------------------------------------------------------

    async def get_contact(
        self, address: PhoneNumber, proxy_address: PhoneNumber,
        channel: Channel = Channel.SMS,
    ) -> Contact | None:
        row = await self._one(statements.GET_CONTACT, {
            "address": address, "proxy_address": proxy_address, "channel": channel.value})
        return rows.contact(row) if row else None

    async def record_inbound(
        self, address: PhoneNumber, proxy_address: PhoneNumber,
        channel: Channel = Channel.SMS, *, now: datetime,
    ) -> Contact:
        return await self._upsert_contact(self._upserts.record_inbound, {
            "address": address, "proxy_address": proxy_address, "channel": channel.value,
            "consent": Consent.UNKNOWN.value, "first_inbound_at": now, "last_inbound_at": now,
            "updated_at": now})

    async def set_contact_consent(
        self, address: PhoneNumber, proxy_address: PhoneNumber, consent: Consent,
        channel: Channel = Channel.SMS, *, now: datetime,
    ) -> Contact:
        return await self._upsert_contact(self._upserts.set_contact_consent, {
            "address": address, "proxy_address": proxy_address, "channel": channel.value,
            "consent": consent.value, "first_inbound_at": None, "last_inbound_at": None,
            "updated_at": now})

    async def _upsert_contact(self, upsert: sa.Insert, values: Mapping[str, Any]) -> Contact:
        row = await self._one(upsert, values)
        assert row is not None  # an upsert always yields its row
        return rows.contact(row)

    # --- quotas ----------------------------------------------------------------------

    async def count_outbound(
        self, *, since: datetime, proxy: PhoneNumber, channels: Sequence[Channel],
        address: PhoneNumber | None = None,
    ) -> int:
        query = statements.COUNT_OUTBOUND if address is None else statements.COUNT_OUTBOUND_TO
        row = await self._one(query, {"since": since, "proxy": proxy, "address": address,
                                      "channels": [c.value for c in channels]})
        assert row is not None  # a count always answers
        return int(row["sent"])

    # --- chat cursors ----------------------------------------------------------------

    async def get_cursor(self, key: str) -> int | None:
        row = await self._one(statements.GET_CURSOR, {"key": key})
        return int(row["value"]) if row else None

    async def set_cursor(self, key: str, value: int) -> None:
        await self._conn.execute(self._upserts.set_cursor, {"key": key, "value": value})

    async def all_cursors(self) -> dict[str, int]:
        return {str(row["key"]): int(row["value"])
                for row in await self._all(statements.ALL_CURSORS)}

    # --- the event log ---------------------------------------------------------------

    async def add_event(
        self, type: str, *, conversation_id: ConversationId | None,
        data: Mapping[str, Any], now: datetime,
    ) -> Event:
        # Readers page by ``id > after``. PostgreSQL hands out ids at insert, not at
        # commit, so two transactions could commit out of id order and a reader would skip
        # the lower id for good. Holding a lock from here to commit makes id order equal
        # commit order. (SQLite has one writer, so it already is.) Callers should add
        # events last in a transaction: one that holds this lock and then waits for a row
        # another event writer holds would deadlock (PostgreSQL then aborts one of them).
        await self._lock(EVENT_LOG_LOCK)
        row = await self._one(statements.ADD_EVENT, {
            "type": type, "conversation_id": conversation_id, "data": dict(data),
            "created_at": now})
        assert row is not None
        return rows.event(row)

    async def list_events(
        self, *, after: int, limit: int, conversation_id: ConversationId | None = None,
    ) -> list[Event]:
        query = events.select().where(events.c.id > after)
        if conversation_id is not None:
            query = query.where(events.c.conversation_id == conversation_id)
        found = await self._all(query.order_by(events.c.id).limit(limit))
        return [rows.event(row) for row in found]
