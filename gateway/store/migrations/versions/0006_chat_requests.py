"""Chat-network calls between gateway processes.

- ``chat_requests``: a process that does not do the XMTP work (``xmtp.worker: false``)
  asks the one that does for a chat-network call (the API's group operations: make a
  group, add or remove members, rename it, is a wallet on XMTP); the XMTP process makes
  the call and writes the answer, which the asker reads and deletes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.create_table(
        "chat_requests",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload", json, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("answer", json, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_chat_requests_state_id", "chat_requests", ["state", "id"])


def downgrade() -> None:
    op.drop_index("ix_chat_requests_state_id", "chat_requests")
    op.drop_table("chat_requests")
