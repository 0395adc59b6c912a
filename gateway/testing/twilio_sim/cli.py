"""``gateway twilio-sim``: the simulator as its own process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from gateway.testing.twilio_sim.simulator import TwilioSimulator


def run(args: argparse.Namespace) -> int:
    """``gateway twilio-sim``: serves until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sim = TwilioSimulator(account_sid=args.account_sid, auth_token=args.auth_token,
                          webhook_url=args.webhook_url, host=args.host, port=args.port)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with sim.running():
            print(f"twilio simulator listening on {sim.url}", flush=True)
            await stop.wait()

    asyncio.run(serve())
    return 0
