"""Where ``gateway serve`` listens, and ``gateway health``, which asks it.

The address is the config's ``server.host``/``server.port``, overridden by GATEWAY_HOST /
GATEWAY_PORT, overridden in turn by ``--host``/``--port``: the default config runs on
another port without being copied (a copy would move its data directory with it, as
``data_dir`` is relative to the config file).

This module stays light (no pydantic, no eth-account): ``gateway health`` runs as the
Dockerfile's HEALTHCHECK every 30 s, and reads only the two keys it needs.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from gateway import envrefs
from gateway.cli import HOST_ENV, PORT_ENV, port

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8080  # ServerConfig's defaults


def overrides(args: argparse.Namespace,
              environ: Mapping[str, str]) -> tuple[str | None, int | None]:
    """(host, port) to listen on instead of the config's; None keeps the config's.
    ValueError names a GATEWAY_PORT that is not a port."""
    host = getattr(args, "host", None) or environ.get(HOST_ENV) or None
    given: int | None = getattr(args, "port", None)
    if given is not None:
        return host, given
    text = environ.get(PORT_ENV)
    if not text:
        return host, None
    try:
        return host, port(text)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"{PORT_ENV}: {exc}") from None


def reachable_host(host: str) -> str:
    """The address a local client connects to for a server listening on ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104


def local_url(host: str, port: Any) -> str:
    """http://host:port as this machine reaches it: loopback for a wildcard host."""
    host = reachable_host(host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def configured_address(path: str | os.PathLike[str],
                       environ: Mapping[str, str]) -> tuple[str, int]:
    """server.host and server.port of the config at ``path`` (with ${ENV} expanded),
    read without validating the rest; ValueError when they cannot be read."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    server = raw.get("server") if isinstance(raw, Mapping) else None
    server = server if isinstance(server, Mapping) else {}

    def value(key: str, default: Any) -> str:
        found = server.get(key, default)
        return envrefs.expand(found, environ) if isinstance(found, str) else str(found)

    host, port_text = value("host", DEFAULT_HOST), value("port", DEFAULT_PORT)
    try:
        return host, port(port_text)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"{path}: server.port: {exc}") from None


def health(args: argparse.Namespace) -> int:
    """GET /healthz on the address ``serve`` would listen on with the same config,
    environment and options; 0 when it answers 200."""
    try:
        host, port_number = configured_address(args.config, os.environ)
        given_host, given_port = overrides(args, os.environ)
    except ValueError as exc:
        print(f"gateway health: {exc}", file=sys.stderr)
        return 1
    host = given_host or host
    port_number = port_number if given_port is None else given_port
    url = local_url(host, port_number) + "/healthz"
    connection = http.client.HTTPConnection(reachable_host(host), port_number,
                                            timeout=args.timeout)
    try:
        connection.request("GET", "/healthz")
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        print(f"gateway health: {url}: {_reason(exc)}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    if status != 200:
        print(f"gateway health: {url} answered {status}", file=sys.stderr)
        return 1
    print(f"{url}: ok")
    return 0


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__
