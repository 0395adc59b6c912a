"""A phone's SMS and WhatsApp are separate addresses, as Twilio has them ("+1…" and
"whatsapp:+1…"): each has its own conversation on a number, its own opt-out, its own
first text and its own 24-hour window.

- ``contacts`` gains ``channel`` in its key. Every existing row, kept for SMS, is copied
  for WhatsApp: what was known of the phone (an opt-out above all) stays true of both.
- ``participants.active_pair`` of a WhatsApp participant becomes ``"whatsapp:address
  proxy"``, so an SMS conversation and a WhatsApp one with the same phone and number can
  both be active.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

def upgrade() -> None:
    with op.batch_alter_table("contacts", recreate="auto") as batch:
        batch.add_column(sa.Column("channel", sa.String(16), nullable=False,
                                   server_default="sms"))
        batch.drop_constraint("pk_contacts", type_="primary")
        batch.create_primary_key("pk_contacts", ["address", "proxy_address", "channel"])
        batch.create_check_constraint("channel_valid", "channel IN ('sms', 'whatsapp')")
    with op.batch_alter_table("contacts", recreate="auto") as batch:
        batch.alter_column("channel", server_default=None)
    op.execute(
        "INSERT INTO contacts (address, proxy_address, channel, consent, first_inbound_at,"
        " last_inbound_at, updated_at) SELECT address, proxy_address, 'whatsapp', consent,"
        " first_inbound_at, last_inbound_at, updated_at FROM contacts WHERE channel = 'sms'")
    op.execute(
        "UPDATE participants SET active_pair = 'whatsapp:' || active_pair"
        " WHERE channel = 'whatsapp' AND active_pair IS NOT NULL")


def downgrade() -> None:
    # Two active conversations that only the channel told apart cannot both keep a pair.
    op.execute(
        "UPDATE participants SET active_pair = NULL WHERE channel = 'whatsapp'"
        " AND active_pair IS NOT NULL AND substr(active_pair, 10) IN"
        " (SELECT active_pair FROM participants WHERE active_pair IS NOT NULL)")
    op.execute(
        "UPDATE participants SET active_pair = substr(active_pair, 10)"
        " WHERE active_pair LIKE 'whatsapp:%'")
    # One contact per phone and number again: a phone known only on WhatsApp is kept,
    # and an opt-out on either channel stays an opt-out.
    op.execute(
        "INSERT INTO contacts (address, proxy_address, channel, consent, first_inbound_at,"
        " last_inbound_at, updated_at) SELECT address, proxy_address, 'sms', consent,"
        " first_inbound_at, last_inbound_at, updated_at FROM contacts AS w"
        " WHERE w.channel = 'whatsapp' AND NOT EXISTS (SELECT 1 FROM contacts AS s"
        " WHERE s.channel = 'sms' AND s.address = w.address"
        " AND s.proxy_address = w.proxy_address)")
    op.execute(
        "UPDATE contacts SET consent = 'denied' WHERE channel = 'sms' AND EXISTS"
        " (SELECT 1 FROM contacts AS w WHERE w.channel = 'whatsapp' AND w.consent = 'denied'"
        " AND w.address = contacts.address AND w.proxy_address = contacts.proxy_address)")
    op.execute("DELETE FROM contacts WHERE channel = 'whatsapp'")
    with op.batch_alter_table("contacts", recreate="auto") as batch:
        batch.drop_constraint("channel_valid", type_="check")
        batch.drop_constraint("pk_contacts", type_="primary")
        batch.create_primary_key("pk_contacts", ["address", "proxy_address"])
        batch.drop_column("channel")
