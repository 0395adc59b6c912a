"""Events keep their conversation's id after the conversation is deleted: the event log
is append-only history, and a client that filters or resumes by conversation must see
all of it, ``conversation.removed`` included. The foreign key from
``events.conversation_id`` to ``conversations`` forced deleting a conversation to null
that id in its events, so it goes (the index stays, for the filter).

Events detached that way before this migration get their id back where their data
names it (conversation and participant events, and ``conversation.removed``);
``message.added`` data names only the message, which was deleted with the conversation,
so those stay detached.

Frozen, as every migration: later changes are new migrations.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FOREIGN_KEY = "fk_events_conversation_id_conversations"

_events = sa.table(
    "events",
    sa.column("id", sa.BigInteger()),
    sa.column("type", sa.String(64)),
    sa.column("conversation_id", sa.String(34)),
    sa.column("data", sa.JSON()),
)
_conversations = sa.table("conversations", sa.column("id", sa.String(34)))


def upgrade() -> None:
    # batch: SQLite cannot drop a constraint in place, so it rebuilds the table
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint(FOREIGN_KEY, type_="foreignkey")
    _reattach_detached_events()


def _reattach_detached_events() -> None:
    connection = op.get_bind()
    detached = connection.execute(
        sa.select(_events.c.id, _events.c.type, _events.c.data)
        .where(_events.c.conversation_id.is_(None))).all()
    for event_id, event_type, data in detached:
        conversation_id = _named_conversation(event_type, data)
        if conversation_id is not None:
            connection.execute(_events.update().where(_events.c.id == event_id)
                               .values(conversation_id=conversation_id))


def _named_conversation(event_type: str, data: Any) -> str | None:
    """The conversation an event's own data names, as the API wrote it."""
    if not isinstance(data, Mapping):
        return None
    found: Any = None
    if event_type == "conversation.removed":
        found = data.get("conversation_id")
    elif event_type in ("conversation.added", "conversation.updated"):
        conversation = data.get("conversation")
        found = conversation.get("id") if isinstance(conversation, Mapping) else None
    elif event_type in ("participant.added", "participant.removed"):
        participant = data.get("participant")
        found = (participant.get("conversation_id") if isinstance(participant, Mapping)
                 else None)
    return found if isinstance(found, str) and len(found) <= 34 else None


def downgrade() -> None:
    # the key cannot hold while events name deleted conversations: detach them, as 0002 did
    op.get_bind().execute(_events.update().where(
        _events.c.conversation_id.is_not(None),
        _events.c.conversation_id.not_in(sa.select(_conversations.c.id)))
        .values(conversation_id=None))
    with op.batch_alter_table("events") as batch:
        batch.create_foreign_key(FOREIGN_KEY, "conversations", ["conversation_id"], ["id"])
