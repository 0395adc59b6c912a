"""The one outbox engine: deliveries in lanes, leases fenced by a token and held by a
live process.

- ``deliveries.lane`` and ``deliveries.position``: the order a delivery keeps, indexed
  among open deliveries only (a partial index), so finding what is open in a lane costs
  the same however many of its deliveries are done. A phone's
  deliveries form one lane (its participant), a conversation's posts into its XMTP group
  another (the conversation); ``position`` is the message's index. A delivery is claimed
  only when nothing earlier in its lane is still open, so a text waiting out a backoff is
  never overtaken by the next one.
- ``deliveries.holder`` and ``deliveries.lease_token``: who holds the lease, and a number
  every claim increments. A result is written only under the token it was claimed with,
  so a send that outlived its lease cannot overwrite the row's next owner.
- ``participants.proxy_address`` is indexed: a rule's quota counts the texts from its
  number, in every conversation on it (the API's included).
- ``outbox_holders``: each gateway process that holds leases, and until when it is known
  to be alive (a heartbeat). Rows held by a process that stopped beating are taken back
  at once, without waiting out their leases.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# open deliveries, as the store's statements spell it (so the planner uses the index)
OPEN = ("deliveries.state = 'pending' OR deliveries.state = 'sending' OR "
        "deliveries.state = 'unknown'")


def upgrade() -> None:
    op.create_table(
        "outbox_holders",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("description", sa.String(255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("alive_until", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("deliveries", recreate="auto") as batch:
        batch.add_column(sa.Column("lane", sa.String(34), nullable=False, server_default=""))
        batch.add_column(sa.Column("position", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("holder", sa.String(64), nullable=True))
        batch.add_column(sa.Column("lease_token", sa.Integer, nullable=False,
                                   server_default="0"))
    # phone deliveries: their participant; wallet deliveries: their conversation
    op.execute(
        "UPDATE deliveries SET"
        " lane = CASE WHEN channel = 'xmtp' THEN (SELECT conversation_id FROM messages"
        " WHERE messages.id = deliveries.message_id) ELSE participant_id END,"
        " position = (SELECT messages.\"index\" FROM messages"
        " WHERE messages.id = deliveries.message_id)")
    with op.batch_alter_table("deliveries", recreate="auto") as batch:
        batch.alter_column("lane", server_default=None)
        batch.alter_column("position", server_default=None)
        batch.alter_column("lease_token", server_default=None)
        batch.create_index("ix_deliveries_open_lane_position", ["lane", "position"],
                           sqlite_where=sa.text(OPEN), postgresql_where=sa.text(OPEN))
        batch.create_index("ix_deliveries_holder", ["holder"])
    # a rule's daily quota counts the texts from its number
    op.create_index("ix_participants_proxy_address", "participants", ["proxy_address"])


def downgrade() -> None:
    op.drop_index("ix_participants_proxy_address", "participants")
    with op.batch_alter_table("deliveries", recreate="auto") as batch:
        batch.drop_index("ix_deliveries_holder")
        batch.drop_index("ix_deliveries_open_lane_position")
        batch.drop_column("lease_token")
        batch.drop_column("holder")
        batch.drop_column("position")
        batch.drop_column("lane")
    op.drop_table("outbox_holders")
