"""Indexes for the API's keyset listings: every conversation, and every message across
conversations, are paged by ``(created_at, id)``; without these both were full scans.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_conversations_created_at_id", "conversations", ["created_at", "id"])
    op.create_index("ix_messages_created_at_id", "messages", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_messages_created_at_id", table_name="messages")
    op.drop_index("ix_conversations_created_at_id", table_name="conversations")
