"""A lane's pending deliveries are never due before an earlier pending one of the lane.

From here on the store keeps it (a backoff or a hand-back moves the pending deliveries
behind it, and a new delivery is born as late), so a claim meets the heads of lanes and
not every text queued behind a head that waits. This brings rows written before to the
same shape: a backlog the upgrade finds would otherwise be walked by every claim until
it drains. Only ``next_attempt_at`` of pending rows moves, and only later, to a time
they could not have gone out before anyway (lane order); nothing is sent sooner.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

def upgrade() -> None:
    # to each pending row, the latest due time of a pending one earlier in its lane
    op.execute(
        "UPDATE deliveries SET next_attempt_at = ("
        " SELECT max(earlier.next_attempt_at) FROM deliveries AS earlier"
        " WHERE earlier.lane = deliveries.lane"
        " AND earlier.position < deliveries.position AND earlier.state = 'pending')"
        " WHERE state = 'pending' AND EXISTS ("
        " SELECT 1 FROM deliveries AS earlier"
        " WHERE earlier.lane = deliveries.lane"
        " AND earlier.position < deliveries.position AND earlier.state = 'pending'"
        " AND earlier.next_attempt_at > deliveries.next_attempt_at)")


def downgrade() -> None:
    pass  # the earlier schema reads the rows as they are: only due times moved, later
