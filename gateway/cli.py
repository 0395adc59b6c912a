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

# subcommand -> "module:function"; the function takes the parsed Namespace, returns an exit code
_COMMANDS = {
    "serve": "gateway.serve:run",
    "devnode": "gateway.xmtp.devnode.cli:run",
    "demo": "gateway.demo:run",
    "check-config": "gateway.config_report:run",
    "db": "gateway.store.migrate:run",
    "twilio-sim": "gateway.testing.twilio_sim:run",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config file")

    devnode = sub.add_parser("devnode", help="run a local XMTP node for offline development")
    devnode.add_argument("--host", default="127.0.0.1")
    devnode.add_argument("--port", type=int, default=5556)
    devnode.add_argument("--db", default="./data/devnode.db",
                         help="SQLite file, or :memory: (default ./data/devnode.db)")
    devnode.add_argument("--log-level", default="INFO")

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
    sim.add_argument("--port", type=int, default=8788)
    sim.add_argument("--auth-token", default="simulator-token")
    sim.add_argument("--account-sid", default="AC" + "0" * 32)
    sim.add_argument("--webhook-url", default=None,
                     help="where simulated phones' texts are posted")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, func_name = _COMMANDS[args.command].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    code: int = func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
