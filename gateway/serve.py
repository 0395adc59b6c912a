"""``gateway serve --config PATH``: load the config, set up logging, run the app."""

from __future__ import annotations

import argparse
import logging

import uvloop
from aiohttp import web

from gateway.app import create_app
from gateway.config_report import load_for_command
from gateway.logs import setup_logging

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    config = load_for_command(args.config)
    if config is None:
        return 1
    setup_logging(config.server.log_format, config.server.log_level,
                  secrets=config.secret_values())
    app = create_app(config)
    log.info("gateway listening on %s:%d (public URL %s)", config.server.host,
             config.server.port, config.server.public_url)
    run_server(app, host=config.server.host, port=config.server.port)
    return 0


def run_server(app: web.Application, *, host: str, port: int) -> None:
    """Serves ``app`` until SIGINT/SIGTERM on a uvloop event loop: it halves the
    webhook's tail latency at load against asyncio's own loop (bench/ingest.py). The
    XMTP client keeps a standard loop on its own thread."""
    web.run_app(app, host=host, port=port, print=None, access_log=None,
                handle_signals=True, loop=uvloop.new_event_loop())
