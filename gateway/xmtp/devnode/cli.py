"""``gateway devnode``: run the local XMTP node in the foreground until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from gateway.errors import GatewayError
from gateway.logs import setup_logging
from gateway.xmtp.devnode.identity_service import InboxLimits
from gateway.xmtp.devnode.rate_limits import RateLimits
from gateway.xmtp.devnode.server import DevNode

log = logging.getLogger(__name__)


async def _serve(args: argparse.Namespace) -> None:
    limits = InboxLimits(args.max_installations, args.max_inbox_updates)
    rate_limits = RateLimits(args.max_writes, args.max_reads, args.rate_window,
                             per_address=args.rate_per_address)
    node = await DevNode.open(db=args.db, host=args.host, port=args.port, limits=limits,
                              rate_limits=rate_limits)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"devnode listening on {node.url} (db {args.db}); Ctrl-C stops it", flush=True)
    try:
        await stop.wait()
    finally:
        await node.close()


def run(args: argparse.Namespace) -> int:
    setup_logging("plain", args.log_level)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args))
    except GatewayError as exc:  # its port or its database is taken: one line, not a trace
        log.error("%s", exc)
        return 1
    return 0
