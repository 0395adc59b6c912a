"""``gateway serve``: load the config, set up logging, run the app.

``--host``/``--port`` (or GATEWAY_HOST/GATEWAY_PORT) override the config's listen
address (gateway.listen), so the default config runs on another port without a copy.

Before anything starts (store, simulator, devnode, XMTP client) the process binds its
port and claims its data directory, so a second gateway on either fails at once with one
line instead of starting half-way beside the first; and it writes nothing (no data
directory, no generated secrets) before it has both."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Iterator, Mapping

import uvloop
from aiohttp import web

from gateway import listen
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.config.report import load_for_command
from gateway.data_dir import check_unclaimed, exclusive_data_dir
from gateway.errors import CannotListen, GatewayError
from gateway.logs import setup_logging
from gateway.xmtp.native_log import route_native_log

log = logging.getLogger(__name__)

BACKLOG = 128  # aiohttp's default


def run(args: argparse.Namespace) -> int:
    # Read-only first: the listen address, and the secrets to redact (made up when
    # secrets.yaml has none yet; nothing is written until the port and directory are ours).
    config = config_for_command(args, persist_secrets=False)
    if config is None:
        return 1
    setup_logging(config.server.log_format, config.server.log_level,
                  secrets=config.secret_values())
    host, port = config.server.host, config.server.port
    with contextlib.ExitStack() as claims:
        try:
            check_unclaimed(config.data_dir)  # names its owner before the port does
            sock = claims.enter_context(listening_socket(host, port))
            claims.enter_context(exclusive_data_dir(config.data_dir))
        except GatewayError as exc:
            log.error("%s", exc)
            return 1
        config = config_for_command(args)  # now generated secrets are kept
        if config is None:
            return 1
        setup_logging(config.server.log_format, config.server.log_level,
                      secrets=config.secret_values())
        route_native_log()  # libxmtp's own log into this one (never restored: see there)
        app = create_app(config)
        public_url = config.server.public_url
        if args.new_installation:
            from gateway.xmtp.network import ALLOW_NEW_INSTALLATION

            app[ALLOW_NEW_INSTALLATION] = True

        async def announce(_app: web.Application) -> None:
            # after every cleanup_ctx has started: the gateway is up, not merely bound
            log.info("gateway listening on %s:%d (public URL %s)", host, port, public_url)

        app.on_startup.append(announce)
        try:
            serve_on(app, sock)
        except GatewayError as exc:  # a part that could not start (say, its devnode)
            log.error("the gateway could not start: %s", exc)
            return 1
    return 0


def config_for_command(args: argparse.Namespace, *, persist_secrets: bool = True,
                       environ: Mapping[str, str] | None = None) -> GatewayConfig | None:
    """The config at ``args.config`` with the listen address overridden by --host/--port,
    else GATEWAY_HOST/GATEWAY_PORT; None after printing what is wrong to stderr."""
    environ = os.environ if environ is None else environ
    try:
        host, port = listen.overrides(args, environ)
    except ValueError as exc:
        print(f"{args.config}: invalid configuration\n  {exc}", file=sys.stderr)
        return None
    config = load_for_command(args.config, persist_secrets=persist_secrets)
    if config is None:
        return None
    return config.listening_on(host, port)


@contextlib.contextmanager
def listening_socket(host: str, port: int) -> Iterator[socket.socket]:
    """A socket bound to ``host:port`` and listening (the kernel queues connections until
    the server accepts them); CannotListen when the address is taken or unusable."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                    flags=socket.AI_PASSIVE)[0][0]
        # SO_REUSEADDR, as aiohttp would set it: a restart need not wait out TIME_WAIT
        sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
    except OSError as exc:
        # create_server appends the address to strerror; the message names it already
        if isinstance(exc, socket.gaierror) or not exc.errno:
            reason = exc.strerror or str(exc)  # a name lookup's own words
        else:
            reason = os.strerror(exc.errno)
        raise CannotListen(f"cannot listen on {host}:{port}: {reason.lower()}") from exc
    with sock:
        yield sock


def run_server(app: web.Application, *, host: str, port: int) -> None:
    with listening_socket(host, port) as sock:
        serve_on(app, sock)


def serve_on(app: web.Application, sock: socket.socket) -> None:
    """Serves ``app`` on ``sock`` until SIGINT/SIGTERM on a uvloop event loop: it halves
    the webhook's tail latency at load against asyncio's own loop (bench/ingest.py). The
    XMTP client keeps a standard loop on its own thread."""
    web.run_app(app, sock=sock, print=None, access_log=None, handle_signals=True,
                backlog=BACKLOG, loop=uvloop.new_event_loop())
