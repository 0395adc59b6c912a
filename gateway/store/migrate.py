"""``gateway db upgrade|current --config PATH``: bring the schema up to date, or show
which migration the database is at. ``gateway serve`` also upgrades on start."""

from __future__ import annotations

import argparse
import asyncio
import sys

from gateway.errors import GatewayError
from gateway.store import engine as engines


def run(args: argparse.Namespace) -> int:
    from gateway.config import load_config  # imported here: only this command needs it

    try:
        database = load_config(args.config).database
        revision = asyncio.run(_run(args.action, database.url))
    except GatewayError as exc:
        print(f"gateway db {args.action}: {exc}", file=sys.stderr)
        return 1
    # safe_url: the URL of a PostgreSQL server may carry a password
    print(f"{database.safe_url}: at revision {revision or 'none (empty database)'}")
    return 0


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
