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
    contacts,
    conversations,
    cursors,
    deliveries,
    events,
    messages,
    participants,
    pending_statuses,
)


def _one_of(column: sa.ColumnElement[str], values: list[str]) -> sa.ColumnElement[bool]:
    """``IN`` for a fixed list, spelled with ``OR``: Core renders a literal ``IN`` list
    late (per execution), which would keep the statement from being prepared."""
    return sa.or_(*(column == value for value in values))


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
TAKE_MESSAGE_INDEX = (
    conversations.update().where(conversations.c.id == sa.bindparam("conversation"))
    .values(next_message_index=conversations.c.next_message_index + 1,
            last_message_at=sa.bindparam("now"))
    .returning(conversations.c.next_message_index - 1))

GET_DELIVERY = _where_equal(deliveries, "id")
ADD_DELIVERY = deliveries.insert().returning(*deliveries.c)
# the columns to set come as execute parameters named after them
UPDATE_DELIVERY = (deliveries.update().where(deliveries.c.id == sa.bindparam("delivery"))
                   .returning(*deliveries.c))
# Sent, unless the delivery already got further (a status callback can beat the send's
# own response): states only move up in rank.
MARK_SENT = (
    deliveries.update().where(deliveries.c.id == sa.bindparam("delivery"))
    .values(provider_id=sa.bindparam("provider"), lease_until=None, next_attempt_at=None,
            updated_at=sa.bindparam("now"),
            state=sa.case((_one_of(deliveries.c.state, [
                s.value for s in DeliveryState if s.rank < DeliveryState.SENT.rank]),
                DeliveryState.SENT.value), else_=deliveries.c.state))
    .returning(*deliveries.c))
# The same, written only while the caller still holds its lease: once a lease ran out the
# row may belong to another worker or the reconciler, under a lease of their own.
_LEASE_HELD = deliveries.c.lease_until == sa.bindparam("held_lease")
UPDATE_LEASED_DELIVERY = UPDATE_DELIVERY.where(_LEASE_HELD)
MARK_SENT_LEASED = MARK_SENT.where(_LEASE_HELD)
# Back to pending without having tried (pacing, a lease too short, a stop): the claim's
# attempt is taken back, so waiting never uses up a delivery's attempts.
HAND_BACK = UPDATE_LEASED_DELIVERY.values(
    attempts=sa.case((deliveries.c.attempts > 0, deliveries.c.attempts - 1), else_=0))
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
_OPEN = [DeliveryState.PENDING.value, DeliveryState.SENDING.value,
         DeliveryState.UNKNOWN.value]
FIRST_OF_ITS_MESSAGE = sa.or_(
    deliveries.c.channel != Channel.XMTP.value,
    ~sa.exists().where(_sibling.c.message_id == deliveries.c.message_id,
                       _sibling.c.channel == Channel.XMTP.value,
                       _sibling.c.id < deliveries.c.id,
                       _one_of(_sibling.c.state, _OPEN)))
DUE_DELIVERIES = (
    sa.select(deliveries.c.id)
    .where(deliveries.c.state == sa.bindparam("state"),
           deliveries.c.channel.in_(sa.bindparam("channels", expanding=True)),
           deliveries.c.next_attempt_at <= sa.bindparam("now"),
           FIRST_OF_ITS_MESSAGE)
    .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
    .limit(sa.bindparam("limit"))
    .with_for_update(skip_locked=True))
_LEASE = (deliveries.update()
          .where(deliveries.c.id.in_(sa.bindparam("ids", expanding=True)))
          .values(state=sa.bindparam("new_state"), lease_until=sa.bindparam("lease"),
                  updated_at=sa.bindparam("now")))
LEASE_FOR_SENDING = _LEASE.values(attempts=deliveries.c.attempts + 1)
LEASE = _LEASE


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

# Phone deliveries since a time, in all or by phone or by rule (the send quotas). Not
# counted: the gateway's own notices (a phone texting HELP must not use up the wallets'
# quota) and deliveries that failed without reaching the provider (refused, say).
_PHONE_DELIVERIES = (
    sa.select(sa.func.count().label("sent"))
    .select_from(deliveries.join(participants, deliveries.c.participant_id == participants.c.id)
                 .join(messages, deliveries.c.message_id == messages.c.id))
    .where(_one_of(deliveries.c.channel, [Channel.SMS.value, Channel.WHATSAPP.value]),
           deliveries.c.created_at >= sa.bindparam("since"),
           messages.c.source != MessageSource.SYSTEM.value,
           sa.or_(deliveries.c.state != DeliveryState.FAILED.value,
                  deliveries.c.provider_id.is_not(None))))
COUNT_OUTBOUND = _PHONE_DELIVERIES
COUNT_OUTBOUND_TO = _PHONE_DELIVERIES.where(participants.c.address == sa.bindparam("address"))
_BY_RULE = (participants.c.conversation_id == conversations.c.id,
            conversations.c.rule == sa.bindparam("rule"))
COUNT_OUTBOUND_BY_RULE = _PHONE_DELIVERIES.join(conversations, _BY_RULE[0]).where(_BY_RULE[1])
COUNT_OUTBOUND_TO_BY_RULE = (COUNT_OUTBOUND_TO.join(conversations, _BY_RULE[0])
                             .where(_BY_RULE[1]))

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


def _upserts(insert: Callable[[sa.Table], postgresql.Insert | sqlite.Insert]) -> Upserts:
    def if_new(table: sa.Table) -> sa.Insert:
        return insert(table).on_conflict_do_nothing().returning(*table.c)

    inbound = insert(contacts)
    consent = insert(contacts)
    cursor = insert(cursors)
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
