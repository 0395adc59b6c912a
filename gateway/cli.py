"""Command line: ``gateway serve | health | devnode | demo | check-config | db |
twilio-sim | xmtp``.

Each subcommand's work lives in the module it belongs to; this file only parses
arguments and imports that module lazily (so ``gateway devnode`` never loads twilio).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

DEFAULT_CONFIG = "config/gateway.yaml"
CONFIG_ENV = "GATEWAY_CONFIG"  # the config file when --config is not given
# Override the config's server.host / server.port (a --host / --port option wins).
HOST_ENV, PORT_ENV = "GATEWAY_HOST", "GATEWAY_PORT"
_DEFAULT_HELP = f"${CONFIG_ENV}, else {DEFAULT_CONFIG}"
# The stand-alone simulator's credentials unless given (the same as
# gateway.testing.twilio_sim's defaults, kept here so parsing does not import twilio).
SIM_ACCOUNT_SID = "AC" + "0" * 32
SIM_AUTH_TOKEN = "simulator-token"  # noqa: S105 - a test tool's well-known default

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
    "health": "gateway.listen:health",
    "devnode": "gateway.xmtp.devnode.cli:run",
    "demo": "gateway.demo:run",
    "check-config": "gateway.config.report:run",
    "db": "gateway.store.migrate:run",
    "twilio-sim": "gateway.testing.twilio_sim:run",
    "xmtp": "gateway.xmtp.admin:run",
    "wallet": "gateway.wallet:run",
}


def simulator_config(account_sid: str, auth_token: str, url: str) -> str:
    """The config lines that point a gateway at a ``gateway twilio-sim`` on ``url``."""
    return (f"twilio:\n  account_sid: {account_sid}\n  auth_token: {auth_token}\n"
            f"  api_base_url: {url}\n  simulator:\n    embedded: false\n")


def indent(text: str) -> str:
    return "".join(f"  {line}" for line in text.splitlines(keepends=True))


def default_config() -> str:
    return os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG


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


def positive(text: str) -> int:
    """An argparse type: a whole number of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    _config_option(serve)
    _listen_options(serve, "serve on")

    health = sub.add_parser(
        "health", help="ask a running gateway's /healthz (exit 0 when it answers 200)",
        description="Asks the gateway that 'serve' with the same config, environment and "
                    "options would run for /healthz; exit status 0 when it answers 200, "
                    "1 otherwise (the Dockerfile's HEALTHCHECK).")
    _config_option(health)
    _listen_options(health, "ask")
    health.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS",
                        help="give up after this many seconds (default %(default)s)")
    serve.add_argument("--new-installation", action="store_true",
                       help="register a new XMTP installation although this data_dir has "
                            "one whose libxmtp database is missing")

    devnode = sub.add_parser("devnode", help="run a local XMTP node for offline development")
    devnode.add_argument("--host", default="127.0.0.1",
                         help="address to listen on (default %(default)s)")
    devnode.add_argument("--port", type=port, default=5556,
                         help="port to listen on, 0 for any free one (default %(default)s)")
    devnode.add_argument("--db", default="./data/devnode.db",
                         help="SQLite file, or :memory: (default %(default)s)")
    devnode.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO",
                         metavar="LEVEL",
                         help="the devnode's own log level, one of "
                              f"{', '.join(LOG_LEVELS)} (default %(default)s); other "
                              "libraries stay at INFO")
    devnode.add_argument("--max-installations", type=positive, default=None, metavar="N",
                         help="refuse an inbox's installation beyond N active ones "
                              "(XMTP's network: 10; default: no cap)")
    devnode.add_argument("--max-inbox-updates", type=positive, default=None, metavar="N",
                         help="refuse an inbox's identity update beyond N in its life "
                              "(XMTP's network: 256; default: no cap)")
    devnode.add_argument("--max-writes", type=positive, default=None, metavar="N",
                         help="refuse a client's write beyond N per --rate-window with "
                              "RESOURCE_EXHAUSTED, as XMTP's node does (the network: "
                              "3000 per 300 s; default: no limit)")
    devnode.add_argument("--max-reads", type=positive, default=None, metavar="N",
                         help="the same for reads (the network: 20000 per 300 s; default: "
                              "no limit)")
    devnode.add_argument("--rate-window", type=positive_seconds, default=300.0,
                         metavar="SECONDS",
                         help="the rolling window of --max-writes and --max-reads "
                              "(default: 300, the network's)")
    devnode.add_argument("--rate-per-address", action="store_true",
                         help="count --max-writes and --max-reads per IP address, as "
                              "XMTP's node does (every client of a host shares them); "
                              "default: per connection, so each local client has its own")

    demo = sub.add_parser("demo", help="a phone and a wallet talking through the gateway")
    _config_option(demo)
    demo.add_argument("--script", action="store_true",
                      help="run a scripted round trip, print the transcript, exit 0 if all "
                           "arrived (the default when stdin is not a terminal)")

    check = sub.add_parser("check-config", help="validate a config and print its rules")
    check.add_argument("path", nargs="?", default=default_config(),
                       help=f"the YAML config file (default {_DEFAULT_HELP})")

    db = sub.add_parser("db", help="database migrations")
    db.add_argument("action", choices=["upgrade", "current"],
                    help="upgrade: apply the migrations; current: show the revision the "
                         "database is at (writes nothing)")
    _config_option(db)

    sim = sub.add_parser(
        "twilio-sim", help="run the Twilio simulator",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Twilio's Messages API, signed webhooks and status callbacks, for "
                    "offline work.\nIt accepts only the account SID and auth token below "
                    "(the defaults, or the ones given);\nto point a gateway at it, put in "
                    "the gateway's config (the banner prints the same):\n\n"
                    + indent(simulator_config(SIM_ACCOUNT_SID, SIM_AUTH_TOKEN,
                                              "http://127.0.0.1:8788")))
    sim.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default %(default)s)")
    sim.add_argument("--port", type=port, default=8788,
                     help="port to listen on, 0 for any free one (default %(default)s)")
    sim.add_argument("--account-sid", default=SIM_ACCOUNT_SID, metavar="SID",
                     help="the only account SID it accepts (default %(default)s)")
    sim.add_argument("--auth-token", default=SIM_AUTH_TOKEN, metavar="TOKEN",
                     help="the only auth token it accepts; it signs webhooks with it "
                          "(default %(default)s)")
    sim.add_argument("--webhook-url", default=None, metavar="URL",
                     help="where simulated phones' texts are posted: the gateway's "
                          "<server.public_url>/twilio/messages (default: nowhere)")

    xmtp = sub.add_parser("xmtp", help="the gateway's XMTP installations")
    xmtp_actions = xmtp.add_subparsers(dest="action", required=True,
                                       help="status: show them; revoke: remove some")
    status = xmtp_actions.add_parser(
        "status", help="the gateway's inbox, its installations and what is left of its caps")
    _config_option(status)
    revoke = xmtp_actions.add_parser(
        "revoke", help="revoke installations of the gateway's inbox (signed with "
                       "xmtp.wallet_key); shows them unless --yes")
    revoke.add_argument("ids", nargs="*", metavar="INSTALLATION_ID",
                        help="ids to revoke (or unambiguous prefixes; see xmtp status)")
    revoke.add_argument("--all-others", action="store_true",
                        help="every installation but this gateway's")
    revoke.add_argument("--yes", action="store_true", help="revoke them, do not only show")
    _config_option(revoke)

    wallet = sub.add_parser(
        "wallet", help="chat as a throwaway wallet on the local XMTP node (development)",
        description="Registers a wallet on the running gateway's embedded devnode (or "
                    "--node), prints its address, then sends each line read from stdin "
                    "to its current conversation and prints what arrives.")
    wallet.add_argument("--config", default=default_config(), metavar="PATH",
                        help="the running gateway's config, to find its devnode "
                             f"(default {_DEFAULT_HELP})")
    wallet.add_argument("--node", default=None,
                        help="an XMTP node's URL instead, e.g. http://127.0.0.1:5556")
    wallet.add_argument("--key", default=None,
                        help="this wallet's private key (0x + 64 hex); default: a new one")
    wallet.add_argument("--db", default=None,
                        help="keep libxmtp's database in this file (default: in memory)")
    wallet.add_argument("--print-address", action="store_true",
                        help="only register the wallet and print its address")
    return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=default_config(), metavar="PATH",
                        help=f"the YAML config file (default {_DEFAULT_HELP})")


def _listen_options(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("--host", default=None,
                        help=f"address to {verb}, instead of the config's server.host "
                             f"(or ${HOST_ENV})")
    parser.add_argument("--port", type=port, default=None,
                        help=f"port to {verb}, instead of the config's server.port "
                             f"(or ${PORT_ENV})")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, func_name = _COMMANDS[args.command].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    code: int = func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
