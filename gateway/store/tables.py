"""The schema, as SQLAlchemy Core tables. Migrations (``migrations/versions``) create it;
a contract test checks that the migrated database and these tables agree.

Invariants of DESIGN.md that the schema itself enforces:

- an (address, proxy_address) pair is in at most one active conversation per channel:
  ``participants.active_pair`` holds ``"address proxy"`` (SMS) or ``"whatsapp:address
  proxy"`` while the participant is in the conversation *and* the conversation is
  active, NULL otherwise, under a plain unique index (NULLs never collide, on SQLite and
  PostgreSQL alike);
- a wallet is an active participant of a conversation at most once
  (``participants.active_wallet``, same technique);
- (source, external_id) is unique on messages;
- message indexes are gap-free per conversation: ``conversations.next_message_index`` is
  incremented in the message's own transaction (the row lock serialises writers) and
  (conversation_id, index) is unique.

Message bodies and media are stored encrypted (``*_ciphertext``) with the id of the key
that sealed them (``key_id``), so keys can rotate.
"""

from __future__ import annotations

import sqlalchemy as sa

from gateway.domain.models import (
    PHONE_CHANNELS,
    Channel,
    Consent,
    ConversationState,
    DeliveryState,
    MessageSource,
)
from gateway.store.columns import UTCDateTime, json_type, serial_id_type

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

ID = sa.String(34)  # a two-letter prefix and 32 hex digits (gateway.domain.ids)
PHONE = sa.String(32)  # E.164: at most 15 digits and a "+"
WALLET = sa.String(42)  # 0x and 40 hex digits


def _one_of(column: str, values: list[str]) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=f"{column}_valid")


CONVERSATION_STATES = [s.value for s in ConversationState]
CHANNELS = [c.value for c in Channel]
PHONE_CHANNEL_VALUES = [c.value for c in PHONE_CHANNELS]
CONSENTS = [c.value for c in Consent]
MESSAGE_SOURCES = [s.value for s in MessageSource]
DELIVERY_STATES = [s.value for s in DeliveryState]
# a delivery not yet done: what lanes keep in order
OPEN_STATES = [DeliveryState.PENDING.value, DeliveryState.SENDING.value,
               DeliveryState.UNKNOWN.value]


def open_deliveries(table: str = "deliveries") -> sa.TextClause:
    """The partial index's predicate, spelled as the store's statements spell it."""
    return sa.text(" OR ".join(f"{table}.state = '{state}'" for state in OPEN_STATES))

conversations = sa.Table(
    "conversations", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("unique_name", sa.String(255), nullable=True, unique=True),
    sa.Column("friendly_name", sa.String(255), nullable=True),
    sa.Column("attributes", json_type(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("rule", sa.String(255), nullable=True),
    sa.Column("xmtp_group_id", sa.String(255), nullable=True, unique=True),
    sa.Column("next_message_index", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("last_message_at", UTCDateTime, nullable=True),
    sa.Index(None, "created_at", "id"),  # the API's conversation list pages by this key
    _one_of("state", CONVERSATION_STATES),
)

participants = sa.Table(
    "participants", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("conversation_id", ID, sa.ForeignKey("conversations.id"), nullable=False,
              index=True),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("identity", WALLET, nullable=True, index=True),
    sa.Column("address", PHONE, nullable=True),
    sa.Column("proxy_address", PHONE, nullable=True),
    sa.Column("consent", sa.String(16), nullable=False),
    sa.Column("attributes", json_type(), nullable=False),
    sa.Column("joined_at", UTCDateTime, nullable=False),
    sa.Column("left_at", UTCDateTime, nullable=True),
    sa.Column("active_pair", sa.String(80), nullable=True, unique=True),
    sa.Column("active_wallet", WALLET, nullable=True),
    sa.UniqueConstraint("conversation_id", "active_wallet"),
    sa.Index(None, "address", "proxy_address"),
    sa.Index(None, "proxy_address"),  # a rule's quota counts the texts from its number
    _one_of("channel", CHANNELS),
    _one_of("consent", CONSENTS),
)

messages = sa.Table(
    "messages", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("conversation_id", ID, sa.ForeignKey("conversations.id"), nullable=False),
    sa.Column("index", sa.Integer, nullable=False),
    sa.Column("author_id", ID, sa.ForeignKey("participants.id"), nullable=True),
    sa.Column("key_id", sa.String(64), nullable=True),
    sa.Column("body_ciphertext", sa.LargeBinary, nullable=True),
    sa.Column("media_ciphertext", sa.LargeBinary, nullable=True),
    sa.Column("attributes", json_type(), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("external_id", sa.String(255), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("conversation_id", "index"),
    sa.UniqueConstraint("source", "external_id"),
    sa.Index(None, "created_at", "id"),  # the API's listing across conversations pages by it
    _one_of("source", MESSAGE_SOURCES),
)

deliveries = sa.Table(
    "deliveries", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("message_id", ID, sa.ForeignKey("messages.id"), nullable=False),
    sa.Column("participant_id", ID, sa.ForeignKey("participants.id"), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=True),
    sa.Column("lease_until", UTCDateTime, nullable=True),
    sa.Column("provider_id", sa.String(255), nullable=True, index=True),
    sa.Column("error_code", sa.Integer, nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # The order a delivery keeps: nothing is claimed while an earlier delivery of its
    # lane (a phone's texts; a conversation's posts into its group) is still open.
    sa.Column("lane", sa.String(34), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),  # the message's index
    # Who holds the lease (an ``outbox_holders`` row) and the fencing token every claim
    # increments: results are written only under the token they were claimed with.
    sa.Column("holder", sa.String(64), nullable=True, index=True),
    sa.Column("lease_token", sa.Integer, nullable=False),
    sa.UniqueConstraint("message_id", "participant_id"),
    sa.Index(None, "state", "next_attempt_at"),
    sa.Index(None, "participant_id", "created_at"),
    # Only open deliveries: a lane's order is looked up among them, however many of its
    # deliveries are done (a long conversation's thousands).
    sa.Index("ix_deliveries_open_lane_position", "lane", "position",
             sqlite_where=open_deliveries(), postgresql_where=open_deliveries()),
    _one_of("channel", CHANNELS),
    _one_of("state", DELIVERY_STATES),
)

# The processes holding outbox leases, each alive until its last heartbeat says: rows
# held by one that stopped beating are taken back at once (it died).
outbox_holders = sa.Table(
    "outbox_holders", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("description", sa.String(255), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("alive_until", UTCDateTime, nullable=False),
)

# Status callbacks that arrived before the send's own response stored the provider id.
pending_statuses = sa.Table(
    "pending_statuses", metadata,
    sa.Column("provider_id", sa.String(255), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("error_code", sa.Integer, nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
    _one_of("state", DELIVERY_STATES),
)

contacts = sa.Table(
    "contacts", metadata,
    sa.Column("address", PHONE, primary_key=True),
    sa.Column("proxy_address", PHONE, primary_key=True),
    sa.Column("channel", sa.String(16), primary_key=True),  # sms | whatsapp
    sa.Column("consent", sa.String(16), nullable=False),
    sa.Column("first_inbound_at", UTCDateTime, nullable=True),
    sa.Column("last_inbound_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    _one_of("consent", CONSENTS),
    _one_of("channel", PHONE_CHANNEL_VALUES),
)

cursors = sa.Table(
    "cursors", metadata,
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

# Append-only; ids only grow, so readers page with ``id > after``. ``conversation_id``
# has no foreign key: events are history and keep naming a conversation after it is
# deleted, so a stream filtered by it sees everything up to ``conversation.removed``.
events = sa.Table(
    "events", metadata,
    sa.Column("id", serial_id_type(), primary_key=True, autoincrement=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("conversation_id", ID, nullable=True, index=True),
    sa.Column("data", json_type(), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# Chat-network calls asked of the process that does the XMTP work by one that does not
# (the API's group operations): a request, its answer, gone once the asker has read it.
chat_requests = sa.Table(
    "chat_requests", metadata,
    sa.Column("id", serial_id_type(), primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("payload", json_type(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # pending, working, done, failed
    sa.Column("answer", json_type(), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("deadline", UTCDateTime, nullable=False),  # not started after it: dropped
    sa.Index(None, "state", "id"),
)
