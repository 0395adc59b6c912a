"""The initial schema: conversations, participants, messages, deliveries (the outbox),
early delivery statuses, contacts, chat cursors and the event log.

Frozen: a later change is a new migration, never an edit of this one. Types are spelled
out here rather than imported from ``tables.py`` so this file keeps meaning what it meant.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

CHANNELS = "'sms', 'whatsapp', 'xmtp'"
CONSENTS = "'allowed', 'unknown', 'denied'"
DELIVERY_STATES = (
    "'pending', 'sending', 'sent', 'delivered', 'read', 'undelivered', 'failed', 'unknown'"
)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _time(name: str, *, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _id(name: str = "id", *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.String(34), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "conversations",
        _id(),
        sa.Column("unique_name", sa.String(255), nullable=True),
        sa.Column("friendly_name", sa.String(255), nullable=True),
        sa.Column("attributes", _json(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(255), nullable=True),
        sa.Column("xmtp_group_id", sa.String(255), nullable=True),
        sa.Column("next_message_index", sa.Integer(), nullable=False),
        _time("created_at", nullable=False),
        _time("updated_at", nullable=False),
        _time("last_message_at", nullable=True),
        sa.CheckConstraint("state IN ('active', 'inactive', 'closed')",
                           name="ck_conversations_state_valid"),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
        sa.UniqueConstraint("unique_name", name="uq_conversations_unique_name"),
        sa.UniqueConstraint("xmtp_group_id", name="uq_conversations_xmtp_group_id"),
    )
    op.create_table(
        "participants",
        _id(),
        _id("conversation_id"),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("identity", sa.String(42), nullable=True),
        sa.Column("address", sa.String(32), nullable=True),
        sa.Column("proxy_address", sa.String(32), nullable=True),
        sa.Column("consent", sa.String(16), nullable=False),
        sa.Column("attributes", _json(), nullable=False),
        _time("joined_at", nullable=False),
        _time("left_at", nullable=True),
        # "address proxy" while the participant and its conversation are both active
        sa.Column("active_pair", sa.String(80), nullable=True),
        sa.Column("active_wallet", sa.String(42), nullable=True),
        sa.CheckConstraint(f"channel IN ({CHANNELS})", name="ck_participants_channel_valid"),
        sa.CheckConstraint(f"consent IN ({CONSENTS})", name="ck_participants_consent_valid"),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"],
                                name="fk_participants_conversation_id_conversations"),
        sa.PrimaryKeyConstraint("id", name="pk_participants"),
        sa.UniqueConstraint("active_pair", name="uq_participants_active_pair"),
        sa.UniqueConstraint("conversation_id", "active_wallet",
                            name="uq_participants_conversation_id_active_wallet"),
    )
    op.create_index("ix_participants_address_proxy_address", "participants",
                    ["address", "proxy_address"])
    op.create_index("ix_participants_conversation_id", "participants", ["conversation_id"])
    op.create_index("ix_participants_identity", "participants", ["identity"])

    op.create_table(
        "messages",
        _id(),
        _id("conversation_id"),
        sa.Column("index", sa.Integer(), nullable=False),
        _id("author_id", nullable=True),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("body_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("media_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("attributes", _json(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=True),
        _time("created_at", nullable=False),
        sa.CheckConstraint("source IN ('sms', 'whatsapp', 'xmtp', 'api', 'system')",
                           name="ck_messages_source_valid"),
        sa.ForeignKeyConstraint(["author_id"], ["participants.id"],
                                name="fk_messages_author_id_participants"),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"],
                                name="fk_messages_conversation_id_conversations"),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.UniqueConstraint("conversation_id", "index",
                            name="uq_messages_conversation_id_index"),
        sa.UniqueConstraint("source", "external_id", name="uq_messages_source_external_id"),
    )

    op.create_table(
        "deliveries",
        _id(),
        _id("message_id"),
        _id("participant_id"),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _time("next_attempt_at", nullable=True),
        _time("lease_until", nullable=True),
        sa.Column("provider_id", sa.String(255), nullable=True),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        _time("created_at", nullable=False),
        _time("updated_at", nullable=False),
        sa.CheckConstraint(f"channel IN ({CHANNELS})", name="ck_deliveries_channel_valid"),
        sa.CheckConstraint(f"state IN ({DELIVERY_STATES})", name="ck_deliveries_state_valid"),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"],
                                name="fk_deliveries_message_id_messages"),
        sa.ForeignKeyConstraint(["participant_id"], ["participants.id"],
                                name="fk_deliveries_participant_id_participants"),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.UniqueConstraint("message_id", "participant_id",
                            name="uq_deliveries_message_id_participant_id"),
    )
    op.create_index("ix_deliveries_participant_id_created_at", "deliveries",
                    ["participant_id", "created_at"])
    op.create_index("ix_deliveries_provider_id", "deliveries", ["provider_id"])
    op.create_index("ix_deliveries_state_next_attempt_at", "deliveries",
                    ["state", "next_attempt_at"])

    op.create_table(
        "pending_statuses",
        sa.Column("provider_id", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        _time("received_at", nullable=False),
        sa.CheckConstraint(f"state IN ({DELIVERY_STATES})",
                           name="ck_pending_statuses_state_valid"),
        sa.PrimaryKeyConstraint("provider_id", name="pk_pending_statuses"),
    )
    op.create_table(
        "contacts",
        sa.Column("address", sa.String(32), nullable=False),
        sa.Column("proxy_address", sa.String(32), nullable=False),
        sa.Column("consent", sa.String(16), nullable=False),
        _time("first_inbound_at", nullable=True),
        _time("last_inbound_at", nullable=True),
        _time("updated_at", nullable=False),
        sa.CheckConstraint(f"consent IN ({CONSENTS})", name="ck_contacts_consent_valid"),
        sa.PrimaryKeyConstraint("address", "proxy_address", name="pk_contacts"),
    )
    op.create_table(
        "cursors",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_cursors"),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        _id("conversation_id", nullable=True),
        sa.Column("data", _json(), nullable=False),
        _time("created_at", nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"],
                                name="fk_events_conversation_id_conversations"),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_conversation_id", "events", ["conversation_id"])


def downgrade() -> None:
    for table in ("events", "cursors", "contacts", "pending_statuses", "deliveries",
                  "messages", "participants", "conversations"):
        op.drop_table(table)
