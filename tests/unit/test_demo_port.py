"""The demo's port: the configured one whenever it can listen there (its last run's
connections in TIME_WAIT do not count), any free one only when it is taken."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pytest

from gateway.config import GatewayConfig, parse_config
from gateway.demo import _listening
from tests.unit.config_fixtures import minimal


def config_on(port: int, tmp_path: Path) -> GatewayConfig:
    raw = minimal()
    raw["server"] = {"port": port}
    return parse_config(raw, base_dir=tmp_path, env={})


def port_in_time_wait() -> int:
    """A port whose last connection is in TIME_WAIT on the server's side, as after a
    demo that closed its connections and stopped."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port: int = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the server closes first: the TIME_WAIT is on its side
            assert client.recv(1) == b""
    return port


class TestTheDemosPort:
    def test_is_the_configured_one_while_its_last_connections_are_in_time_wait(
            self, tmp_path: Path) -> None:
        port = port_in_time_wait()
        with socket.socket() as plain, pytest.raises(OSError) as taken:
            plain.bind(("127.0.0.1", port))  # what a bind without SO_REUSEADDR meets
        assert taken.value.errno == errno.EADDRINUSE
        with _listening(config_on(port, tmp_path)) as (sock, config):
            assert sock.getsockname()[1] == port
            assert config.server.port == port

    def test_moves_to_a_free_one_when_another_listens_there_and_the_public_url_follows(
            self, tmp_path: Path) -> None:
        with socket.create_server(("127.0.0.1", 0)) as other:
            port = other.getsockname()[1]
            with _listening(config_on(port, tmp_path)) as (sock, config):
                moved = sock.getsockname()[1]
                assert moved != port
                assert config.server.port == moved
                assert config.server.public_url == f"http://127.0.0.1:{moved}"
