"""Alembic environment. The gateway always hands Alembic an open connection (see
``gateway.store.migrate``), so the engine's SQLite pragmas and PostgreSQL settings are the
same for migrations as for the running store."""

from __future__ import annotations

from alembic import context

from gateway.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `gateway db upgrade`, which opens the connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things; batch mode rebuilds tables for later migrations.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
