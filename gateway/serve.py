"""``gateway serve --config PATH``: load the config, set up logging, run the app.

Before anything starts (store, simulator, devnode, XMTP client) the process claims its
data directory and binds its port, so a second gateway on either fails at once with one
line instead of starting half-way beside the first."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
from collections.abc import Iterator

import uvloop
from aiohttp import web

from gateway.app import create_app
from gateway.config.report import load_for_command
from gateway.data_dir import exclusive_data_dir
from gateway.errors import CannotListen, GatewayError
from gateway.logs import setup_logging

log = logging.getLogger(__name__)

BACKLOG = 128  # aiohttp's default


def run(args: argparse.Namespace) -> int:
    config = load_for_command(args.config)
    if config is None:
        return 1
    setup_logging(config.server.log_format, config.server.log_level,
                  secrets=config.secret_values())
    host, port = config.server.host, config.server.port
    with contextlib.ExitStack() as claims:
        try:
            claims.enter_context(exclusive_data_dir(config.data_dir))
            sock = claims.enter_context(listening_socket(host, port))
        except GatewayError as exc:
            log.error("%s", exc)
            return 1
        app = create_app(config)
        if args.new_installation:
            from gateway.xmtp.network import ALLOW_NEW_INSTALLATION

            app[ALLOW_NEW_INSTALLATION] = True

        async def announce(_app: web.Application) -> None:
            # after every cleanup_ctx has started: the gateway is up, not merely bound
            log.info("gateway listening on %s:%d (public URL %s)", host, port,
                     config.server.public_url)

        app.on_startup.append(announce)
        try:
            serve_on(app, sock)
        except GatewayError as exc:  # a part that could not start (say, its devnode)
            log.error("the gateway could not start: %s", exc)
            return 1
    return 0


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
