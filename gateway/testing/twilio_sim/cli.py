"""``gateway twilio-sim``: the simulator as its own process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from gateway.cli import indent, simulator_config
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
            print(banner(sim), flush=True)
            await stop.wait()

    asyncio.run(serve())
    return 0


def banner(sim: TwilioSimulator) -> str:
    """What the simulator accepts, and the config lines that point a gateway at it."""
    webhook = sim.webhook_url or "nowhere (use --webhook-url)"
    return (f"twilio simulator listening on {sim.url}\n"
            f"It accepts account SID {sim.account_sid} with auth token {sim.auth_token} "
            f"and posts phones' texts to {webhook}.\n"
            "To point a gateway at it, put in the gateway's config:\n\n"
            + indent(simulator_config(sim.account_sid, sim.auth_token, sim.url))
            + "\nCtrl-C stops it.")
