"""The durable store: SQLAlchemy tables, the ``Store`` implementation, migrations."""

from gateway.store.sql import SqlStore, open_store

__all__ = ["SqlStore", "open_store"]
