"""Command line: ``gateway serve | devnode | demo | check-config | db | twilio-sim``.

Each subcommand's work lives in the module it belongs to; this file only parses
arguments and imports that module lazily (so ``gateway devnode`` never loads twilio).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

DEFAULT_CONFIG = "config/gateway.yaml"

# What ``gateway --help`` says; the module docstring above is for developers.
DESCRIPTION = (
    "A self-hostable gateway between XMTP wallet chat and SMS/WhatsApp (Twilio): a text "
    "to a number reaches a wallet's XMTP conversation, and the wallet's reply goes back "
    "to the phone. Run 'gateway COMMAND --help' for a command's options.")

# The same names as the config's server.log_level (gateway.config.types.LogLevel), kept
# here so parsing arguments does not import pydantic.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# subcommand -> "module:function"; the function takes the parsed Namespace, returns an exit code
_COMMANDS = {
    "serve": "gateway.serve:run",
    "devnode": "gateway.xmtp.devnode.cli:run",
    "demo": "gateway.demo:run",
    "check-config": "gateway.config.report:run",
    "db": "gateway.store.migrate:run",
    "twilio-sim": "gateway.testing.twilio_sim:run",
    "wallet": "gateway.wallet:run",
}


def port(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free port) to 65535. The OS would otherwise
    take 80800 modulo 65536, or Python raise OverflowError deep inside the server."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a port: use a whole number from 0 (any free port) to 65535")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config file")

    devnode = sub.add_parser("devnode", help="run a local XMTP node for offline development")
    devnode.add_argument("--host", default="127.0.0.1")
    devnode.add_argument("--port", type=port, default=5556)
    devnode.add_argument("--db", default="./data/devnode.db",
                         help="SQLite file, or :memory: (default ./data/devnode.db)")
    devnode.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO")

    demo = sub.add_parser("demo", help="a phone and a wallet talking through the gateway")
    demo.add_argument("--config", default=DEFAULT_CONFIG)
    demo.add_argument("--script", action="store_true",
                      help="run a scripted round trip, print the transcript, exit 0 if all arrived")

    check = sub.add_parser("check-config", help="validate a config and print its rules")
    check.add_argument("path", nargs="?", default=DEFAULT_CONFIG)

    db = sub.add_parser("db", help="database migrations")
    db.add_argument("action", choices=["upgrade", "current"])
    db.add_argument("--config", default=DEFAULT_CONFIG)

    sim = sub.add_parser("twilio-sim", help="run the Twilio simulator")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=port, default=8788)
    sim.add_argument("--auth-token", default="simulator-token")
    sim.add_argument("--account-sid", default="AC" + "0" * 32)
    sim.add_argument("--webhook-url", default=None,
                     help="where simulated phones' texts are posted")

    wallet = sub.add_parser(
        "wallet", help="chat as a throwaway wallet on the local XMTP node (development)",
        description="Registers a wallet on the running gateway's embedded devnode (or "
                    "--node), prints its address, then sends each line read from stdin "
                    "to its current conversation and prints what arrives.")
    wallet.add_argument("--config", default=DEFAULT_CONFIG,
                        help="the running gateway's config, to find its devnode")
    wallet.add_argument("--node", default=None,
                        help="an XMTP node's URL instead, e.g. http://127.0.0.1:5556")
    wallet.add_argument("--key", default=None,
                        help="this wallet's private key (0x + 64 hex); default: a new one")
    wallet.add_argument("--db", default=None,
                        help="keep libxmtp's database in this file (default: in memory)")
    wallet.add_argument("--print-address", action="store_true",
                        help="only register the wallet and print its address")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, func_name = _COMMANDS[args.command].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    code: int = func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
