"""``gateway db upgrade|current --config PATH``: bring the schema up to date, or show
which migration the database is at. ``gateway serve`` also upgrades on start.

``current`` only reads: it creates no data directory, no secrets file and no empty
SQLite database (a SQLite file that does not exist yet is reported as such)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from gateway.errors import GatewayError
from gateway.store import engine as engines


def run(args: argparse.Namespace) -> int:
    from gateway.config import load_config  # imported here: only this command needs it

    try:
        database = load_config(args.config,
                               persist_secrets=args.action == "upgrade").database
        missing = args.action == "current" and _missing_sqlite_file(database.url)
        revision = None if missing else asyncio.run(_run(args.action, database.url))
    except GatewayError as exc:
        print(f"gateway db {args.action}: {exc}", file=sys.stderr)
        return 1
    # safe_url: the URL of a PostgreSQL server may carry a password
    state = "none (no database file yet)" if missing else revision or "none (empty database)"
    print(f"{database.safe_url}: at revision {state}")
    return 0


def _missing_sqlite_file(url: str) -> bool:
    """A SQLite database file that does not exist (connecting would create it)."""
    parsed = engines.normalise_url(url)
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or name in {None, "", ":memory:"}:
        return False
    assert name is not None
    return not name.startswith("file:") and not Path(name).exists()


async def _run(action: str, url: str) -> str | None:
    engine = engines.create_engine(url)
    try:
        if action == "upgrade":
            engines.ensure_sqlite_directory(url)
            await engines.upgrade(engine)
        return await engines.current_revision(engine)
    except engines.DATABASE_ERRORS as exc:
        raise engines.describe_failure(f"cannot {action} the database", exc) from exc
    finally:
        await engine.dispose()
