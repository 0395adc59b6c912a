"""The statements of the store's frequent calls, built once and run with parameters.

Building a Core statement and deriving its compilation-cache key cost more than running
it: measured on SQLite, ~0.13 ms for a statement built per call against ~0.03 ms for a
prebuilt one (whose cache key SQLAlchemy memoises), and an inbound text is about ten
statements. So these are module constants; values travel as execute parameters (inserts)
or named ``bindparam``s. A bind name is never a column's name where that column is also
being set: SQLAlchemy reserves those names for the SET/VALUES clause.

``INSERT … ON CONFLICT`` is dialect-specific in Core, so those come per dialect
(``UPSERTS``); everything else is shared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from gateway.domain.models import Channel, DeliveryState, MessageSource
from gateway.store.tables import (
    OPEN_STATES,
    contacts,
    conversations,
    cursors,
    deliveries,
    events,
    messages,
    outbox_holders,
    participants,
    pending_statuses,
)


def _one_of(column: sa.ColumnElement[str], values: list[str]) -> sa.ColumnElement[bool]:
    """``IN`` for a fixed list, spelled with ``OR`` of constants written into the SQL:
    Core renders a literal ``IN`` list late (per execution), which would keep the
    statement from being prepared, and a bound value would keep the planner from using a
    partial index whose predicate names the same constants (``tables.OPEN_STATES``)."""
    return sa.or_(*(column == sa.literal_column(f"'{value}'") for value in values))


def _where_equal(table: sa.Table, *columns: str) -> sa.Select[tuple[object, ...]]:
    """``SELECT * FROM table WHERE column = :column AND …``."""
    return table.select().where(*(table.c[name] == sa.bindparam(name) for name in columns))


GET_CONVERSATION = _where_equal(conversations, "id")
GET_CONVERSATION_BY_UNIQUE_NAME = _where_equal(conversations, "unique_name")
GET_CONVERSATION_BY_GROUP = _where_equal(conversations, "xmtp_group_id")
# NO KEY UPDATE: other transactions' foreign-key checks against this row (a message or
# participant being added) need not wait for it. SQLite renders no lock clause.
LOCK_CONVERSATION = GET_CONVERSATION.with_for_update(key_share=True)

GET_PARTICIPANT = _where_equal(participants, "id")
PHONE_PARTICIPANT = _where_equal(participants, "active_pair")
PAIR_HOLDER = (sa.select(participants.c.conversation_id)
               .where(participants.c.active_pair == sa.bindparam("active_pair")))
_MEMBERS = (participants.select()
            .where(participants.c.conversation_id == sa.bindparam("conversation_id"))
            .order_by(participants.c.joined_at, participants.c.id))
ALL_PARTICIPANTS = _MEMBERS
CURRENT_PARTICIPANTS = _MEMBERS.where(participants.c.left_at.is_(None))

GET_MESSAGE = _where_equal(messages, "id")
FIND_MESSAGE = _where_equal(messages, "source", "external_id")
# The next index is taken by an UPDATE of the conversation's row: its row lock (SQLite:
# the write lock) is held to commit, so concurrent writers queue here and indexes come
# out with no gap and no repeat.
# last_message_at only moves forward: two writers of one conversation may take their
# times in one order and the row in the other (PostgreSQL), and the newest message's time
# is what it says.
TAKE_MESSAGE_INDEX = (
    conversations.update().where(conversations.c.id == sa.bindparam("conversation"))
    .values(next_message_index=conversations.c.next_message_index + 1,
            last_message_at=sa.case(
                (sa.or_(conversations.c.last_message_at.is_(None),
                        conversations.c.last_message_at < sa.bindparam("now")),
                 sa.bindparam("now")),
                else_=conversations.c.last_message_at))
    .returning(conversations.c.next_message_index - 1))

GET_DELIVERY = _where_equal(deliveries, "id")
ADD_DELIVERY = deliveries.insert().returning(*deliveries.c)
_OPEN = OPEN_STATES
# What a new delivery of a lane waits behind: how many earlier ones are open and not held
# by ``holder`` (pending, in a backoff, or another process's: while there are any it is
# not claimed at birth), and the latest time one of those pending falls due (it is not
# due before then; see LANE_BEHIND).
LANE_WAIT = (
    sa.select(sa.func.count().label("blocking"),
              sa.func.max(sa.case((deliveries.c.state == DeliveryState.PENDING.value,
                                   deliveries.c.next_attempt_at))).label("due"))
    .where(deliveries.c.lane == sa.bindparam("lane"), _one_of(deliveries.c.state, _OPEN),
           sa.or_(deliveries.c.holder.is_(None),
                  deliveries.c.holder != sa.bindparam("holder"))))
# The latest time an earlier pending delivery of the lane falls due: a delivery going
# back to wait is not due before it (the head's retry may have been written just before,
# while this one was still held behind it, so LANE_BEHIND passed it by).
LANE_AHEAD = (
    sa.select(sa.func.max(deliveries.c.next_attempt_at).label("due"))
    .where(deliveries.c.lane == sa.bindparam("of_lane"),
           deliveries.c.position < sa.bindparam("before_position"),
           deliveries.c.state == DeliveryState.PENDING.value))
SET_DUE = (deliveries.update().where(deliveries.c.id == sa.bindparam("delivery"))
           .values(next_attempt_at=sa.bindparam("due")).returning(*deliveries.c))
# A lane's pending deliveries are never due before an earlier pending one of the lane:
# when a delivery goes back to wait (a backoff, a hand-back), those behind it wait as
# long. A claim then meets, among the due rows, the heads of their lanes and not every
# text queued behind a head that waits — without this each claim would walk the whole
# backlog (a write budget spent for minutes queues thousands).
LANE_BEHIND = (
    deliveries.update()
    .where(deliveries.c.lane == sa.bindparam("of_lane"),
           deliveries.c.position > sa.bindparam("after_position"),
           deliveries.c.state == DeliveryState.PENDING.value,
           deliveries.c.next_attempt_at < sa.bindparam("due"))
    .values(next_attempt_at=sa.bindparam("due")))
LANE_OPEN = (deliveries.select()
             .where(deliveries.c.lane == sa.bindparam("lane"),
                    _one_of(deliveries.c.state, _OPEN))
             .order_by(deliveries.c.position, deliveries.c.id))
# A result, and every other write the mark_* calls make, leaves the row unleased.
UNLEASED = {"holder": None, "lease_until": None}
# the columns to set come as execute parameters named after them
UPDATE_DELIVERY = (deliveries.update().where(deliveries.c.id == sa.bindparam("delivery"))
                   .returning(*deliveries.c))
# Sent, unless the delivery already got further (a status callback can beat the send's
# own response): states only move up in rank.
MARK_SENT = (
    deliveries.update().where(deliveries.c.id == sa.bindparam("delivery"))
    .values(provider_id=sa.bindparam("provider"), next_attempt_at=None,
            updated_at=sa.bindparam("now"), **UNLEASED,
            state=sa.case((_one_of(deliveries.c.state, [
                s.value for s in DeliveryState if s.rank < DeliveryState.SENT.rank]),
                DeliveryState.SENT.value), else_=deliveries.c.state))
    .returning(*deliveries.c))
# The same, written only while the caller still holds its lease: once another claim took
# the row (a new token), it belongs to that claim's holder.
_LEASE_HELD = sa.and_(deliveries.c.lease_token == sa.bindparam("held_token"),
                      deliveries.c.holder == sa.bindparam("held_by"))
UPDATE_LEASED_DELIVERY = UPDATE_DELIVERY.where(_LEASE_HELD)
MARK_SENT_LEASED = MARK_SENT.where(_LEASE_HELD)
# Back to pending without having tried (pacing, a lease too short, a stop): the claim's
# attempt is taken back, so waiting never uses up a delivery's attempts.
HAND_BACK = UPDATE_DELIVERY.values(
    attempts=sa.case((deliveries.c.attempts > 0, deliveries.c.attempts - 1), else_=0))
HAND_BACK_LEASED = HAND_BACK.where(_LEASE_HELD)
MESSAGE_DELIVERIES = (_where_equal(deliveries, "message_id")
                      .order_by(deliveries.c.created_at, deliveries.c.id))
PROVIDER_DELIVERIES = _where_equal(deliveries, "provider_id").order_by(deliveries.c.id)
PROVIDER_IDS_SENT_TO = (
    sa.select(deliveries.c.provider_id)
    .join(participants, participants.c.id == deliveries.c.participant_id)
    .where(participants.c.address == sa.bindparam("address"),
           participants.c.proxy_address == sa.bindparam("proxy_address"),
           deliveries.c.provider_id.is_not(None),
           deliveries.c.updated_at >= sa.bindparam("since"),
           deliveries.c.id != sa.bindparam("besides")))
TAKE_EARLY_STATUS = (
    pending_statuses.delete()
    .where(pending_statuses.c.provider_id == sa.bindparam("provider_id"))
    .returning(*pending_statuses.c))

# Claiming: the due rows' ids (skipping rows another worker has locked, on PostgreSQL),
# then the lease on exactly those.
# One post into an XMTP group covers every wallet delivery of its message, so only the
# first open XMTP delivery of a message is ever claimed (its siblings are marked with it):
# two workers can never each claim a sibling and post the message twice.
_sibling = deliveries.alias("sibling")
FIRST_OF_ITS_MESSAGE = sa.or_(
    deliveries.c.channel != Channel.XMTP.value,
    ~sa.exists().where(_sibling.c.message_id == deliveries.c.message_id,
                       _sibling.c.channel == Channel.XMTP.value,
                       _sibling.c.id < deliveries.c.id,
                       _one_of(_sibling.c.state, _OPEN)))
# A lane's deliveries go out in order: one is due for ``holder`` only when every earlier
# open one of its lane is held by that same holder (it sends them first, in its own lane
# queue). A text in its backoff (pending, unheld) holds back the phone's next one; so does
# one another process holds.
_earlier = deliveries.alias("earlier")
FIRST_OF_ITS_LANE = ~sa.exists().where(
    _earlier.c.lane == deliveries.c.lane, _earlier.c.position < deliveries.c.position,
    _one_of(_earlier.c.state, _OPEN),
    sa.or_(_earlier.c.holder.is_(None), _earlier.c.holder != sa.bindparam("holder")))
_CLAIMABLE = (deliveries.c.state == DeliveryState.PENDING.value,
              deliveries.c.channel.in_(sa.bindparam("channels", expanding=True)),
              FIRST_OF_ITS_MESSAGE, FIRST_OF_ITS_LANE)
DUE_DELIVERIES = (
    sa.select(deliveries.c.id)
    .where(*_CLAIMABLE, deliveries.c.next_attempt_at <= sa.bindparam("now"))
    .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
    .limit(sa.bindparam("limit"))
    .with_for_update(skip_locked=True))
# The soonest a pending delivery falls due after ``now`` (the engine sleeps until then
# rather than polling; what is due already and was not claimed waits behind work held
# elsewhere, and that work's end wakes the engine). An index seek: the lanes' order is
# left to the claim, as one that meets a lane's head not yet due only sleeps again.
NEXT_DUE = (sa.select(sa.func.min(deliveries.c.next_attempt_at).label("due"))
            .where(deliveries.c.state == DeliveryState.PENDING.value,
                   deliveries.c.channel.in_(sa.bindparam("channels", expanding=True)),
                   deliveries.c.next_attempt_at > sa.bindparam("now")))
# Outcomes nobody will report: ``unknown`` and free, or held under a lease that ran out or
# by a process that stopped beating (it died between claim and result).
_ALIVE = (sa.select(outbox_holders.c.id)
          .where(outbox_holders.c.alive_until > sa.bindparam("now")))
RECONCILABLE = (
    sa.select(deliveries.c.id)
    .where(sa.or_(
        sa.and_(deliveries.c.state == DeliveryState.UNKNOWN.value,
                deliveries.c.holder.is_(None)),
        sa.and_(_one_of(deliveries.c.state, [DeliveryState.SENDING.value,
                                             DeliveryState.UNKNOWN.value]),
                deliveries.c.holder.is_not(None),
                sa.or_(deliveries.c.lease_until <= sa.bindparam("now"),
                       deliveries.c.holder.not_in(_ALIVE)))),
        deliveries.c.channel.in_(sa.bindparam("channels", expanding=True)),
        FIRST_OF_ITS_MESSAGE)
    .order_by(deliveries.c.lane, deliveries.c.position, deliveries.c.id)
    .limit(sa.bindparam("limit"))
    .with_for_update(skip_locked=True))
_LEASE = (deliveries.update()
          .where(deliveries.c.id.in_(sa.bindparam("ids", expanding=True)))
          .values(state=sa.bindparam("new_state"), lease_until=sa.bindparam("lease"),
                  holder=sa.bindparam("holder"), lease_token=deliveries.c.lease_token + 1,
                  updated_at=sa.bindparam("now")))
LEASE_FOR_SENDING = _LEASE.values(attempts=deliveries.c.attempts + 1)
LEASE = _LEASE
RENEW_LEASE = (deliveries.update()
               .where(deliveries.c.id == sa.bindparam("delivery"), _LEASE_HELD)
               .values(lease_until=sa.bindparam("until")))
# A process starting again under its holder id: its previous life's leases are over.
RELEASE_HELD = (
    deliveries.update()
    .where(deliveries.c.holder == sa.bindparam("held_by"),
           _one_of(deliveries.c.state, [DeliveryState.SENDING.value,
                                        DeliveryState.UNKNOWN.value]))
    .values(state=DeliveryState.UNKNOWN.value, holder=None, lease_until=None,
            lease_token=deliveries.c.lease_token + 1, updated_at=sa.bindparam("now"))
    .returning(*deliveries.c))


# A claimed delivery with everything its sender needs, in one statement: each row is the
# columns of these tables side by side, in this order (the author may be all NULL).
_target = participants.alias("target")
_author = participants.alias("author")
JOB_PARTS = (deliveries, messages, _target, conversations, _author)
JOBS = (
    sa.select(*JOB_PARTS)
    .join_from(deliveries, messages, deliveries.c.message_id == messages.c.id)
    .join(_target, deliveries.c.participant_id == _target.c.id)
    .join(conversations, messages.c.conversation_id == conversations.c.id)
    .outerjoin(_author, messages.c.author_id == _author.c.id)
    .where(deliveries.c.id.in_(sa.bindparam("ids", expanding=True))))

# Phone deliveries since a time from one of our numbers on some channels (a rule's), in
# all or to one phone (the send quotas). Not counted: the gateway's own notices (a phone
# texting HELP must not use up the wallets' quota) and deliveries that failed without
# reaching the provider (refused, say).
COUNT_OUTBOUND = (
    sa.select(sa.func.count().label("sent"))
    .select_from(deliveries.join(participants, deliveries.c.participant_id == participants.c.id)
                 .join(messages, deliveries.c.message_id == messages.c.id))
    .where(deliveries.c.channel.in_(sa.bindparam("channels", expanding=True)),
           participants.c.proxy_address == sa.bindparam("proxy"),
           deliveries.c.created_at >= sa.bindparam("since"),
           messages.c.source != MessageSource.SYSTEM.value,
           sa.or_(deliveries.c.state != DeliveryState.FAILED.value,
                  deliveries.c.provider_id.is_not(None))))
COUNT_OUTBOUND_TO = COUNT_OUTBOUND.where(participants.c.address == sa.bindparam("address"))

# A group, once set, is never replaced: the first writer wins (two processes, or the API
# and a worker, may each create a group for the same new conversation).
SET_CONVERSATION_GROUP = (
    conversations.update().where(
        conversations.c.id == sa.bindparam("conversation"),
        sa.or_(conversations.c.xmtp_group_id.is_(None),
               conversations.c.xmtp_group_id == sa.bindparam("group")))
    .values(xmtp_group_id=sa.bindparam("group")))

GET_CONTACT = _where_equal(contacts, "address", "proxy_address", "channel")
GET_CURSOR = sa.select(cursors.c.value).where(cursors.c.key == sa.bindparam("key"))
ALL_CURSORS = sa.select(cursors.c.key, cursors.c.value)

ADD_EVENT = events.insert().returning(*events.c)
ADVISORY_LOCK = sa.select(sa.func.pg_advisory_xact_lock(sa.bindparam("key", type_=sa.BigInteger)))


@dataclass(frozen=True)
class Upserts:
    """The ``INSERT … ON CONFLICT`` statements of one dialect."""

    add_conversation: sa.Insert
    add_participant: sa.Insert
    add_message: sa.Insert
    record_inbound: sa.Insert
    set_contact_consent: sa.Insert
    set_cursor: sa.Insert
    beat: sa.Insert


def _upserts(insert: Callable[[sa.Table], postgresql.Insert | sqlite.Insert]) -> Upserts:
    def if_new(table: sa.Table) -> sa.Insert:
        return insert(table).on_conflict_do_nothing().returning(*table.c)

    inbound = insert(contacts)
    consent = insert(contacts)
    cursor = insert(cursors)
    beat = insert(outbox_holders)
    return Upserts(
        add_conversation=if_new(conversations),
        add_participant=if_new(participants),
        add_message=if_new(messages),
        record_inbound=inbound.on_conflict_do_update(
            index_elements=[contacts.c.address, contacts.c.proxy_address, contacts.c.channel],
            set_={"first_inbound_at": sa.func.coalesce(contacts.c.first_inbound_at,
                                                       inbound.excluded.first_inbound_at),
                  "last_inbound_at": inbound.excluded.last_inbound_at,
                  "updated_at": inbound.excluded.updated_at},
        ).returning(*contacts.c),
        set_contact_consent=consent.on_conflict_do_update(
            index_elements=[contacts.c.address, contacts.c.proxy_address, contacts.c.channel],
            set_={"consent": consent.excluded.consent,
                  "updated_at": consent.excluded.updated_at},
        ).returning(*contacts.c),
        set_cursor=cursor.on_conflict_do_update(
            index_elements=[cursors.c.key], set_={"value": cursor.excluded.value},
            where=cursors.c.value < cursor.excluded.value),
        beat=beat.on_conflict_do_update(
            index_elements=[outbox_holders.c.id],
            set_={"alive_until": beat.excluded.alive_until,
                  "description": beat.excluded.description}),
    )


UPSERTS = {"postgresql": _upserts(postgresql.insert), "sqlite": _upserts(sqlite.insert)}


def prebuilt() -> frozenset[sa.Executable]:
    """Every statement of this module. Only these are prepared for the inline SQLite
    connection (``gateway.store.prepared``): a statement built per call would be compiled
    once and never met again."""
    found = {value for value in globals().values() if isinstance(value, sa.Executable)}
    for upserts in UPSERTS.values():
        found |= {getattr(upserts, name) for name in upserts.__dataclass_fields__}
    return frozenset(found)
