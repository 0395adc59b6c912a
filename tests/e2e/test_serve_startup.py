"""``gateway serve`` on the default config (embedded devnode and simulator), as a
process: it claims its data directory and its port before starting or writing anything,
says it listens only once it does, a second gateway on either fails at once in one
line, libxmtp's own log comes out as the gateway's, and ``gateway health`` finds it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.data_dir import exclusive_data_dir
from gateway.xmtp.devnode.storage import DevNodeStorage
from tests.ports import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
STARTS_WITHIN = 90.0


@dataclass
class Setup:
    """The default config on ``port``, with its data directory under ``tmp``."""

    tmp: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return (self.tmp / "data").resolve()

    @property
    def config(self) -> Path:
        path = self.tmp / "gateway.yaml"
        if not path.exists():
            text = (ROOT / "config" / "gateway.yaml").read_text()
            text = text.replace("port: 8080", f"port: {self.port}")
            path.write_text(text.replace("127.0.0.1:8080", f"127.0.0.1:{self.port}"))
        return path

    def env(self) -> dict[str, str]:
        return {**os.environ, "GATEWAY_DATA_DIR": str(self.data_dir), "RUST_LOG": "off",
                "PYTHONUNBUFFERED": "1"}

    def serve(self) -> subprocess.CompletedProcess[str]:
        """A serve expected to stop by itself; its output as one text."""
        return subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "gateway", "serve", "--config", str(self.config)],
            cwd=ROOT, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=60, check=False)

    def started(self) -> list[str]:
        """What a started gateway would have left in the data directory."""
        return sorted(p.name for p in self.data_dir.glob("*")
                      if p.name.startswith(("gateway.db", "devnode.db")) or p.name == "xmtp")


def one_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    return lines[0]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path, free_port())


@dataclass
class Running:
    setup: Setup
    proc: subprocess.Popen[str]
    lines: list[str]
    log_path: Path


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One gateway, up: output read until it says it listens. The default config with
    JSON logs, its port given as an option, libxmtp at INFO."""
    setup = Setup(tmp_path_factory.mktemp("serve"), free_port())
    config = setup.tmp / "json.yaml"
    config.write_text((ROOT / "config" / "gateway.yaml").read_text().replace(
        "  port: 8080\n", "  port: 8080\n  log_format: json\n"))
    log_path = setup.tmp / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "gateway", "serve", "--config", str(config),
             "--port", str(setup.port)],
            cwd=ROOT, env={**setup.env(), "RUST_LOG": "info"}, stdout=log,
            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + STARTS_WITHIN
        while "gateway listening" not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.02)
        yield Running(setup, proc, log_path.read_text().splitlines(), log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# SQLCipher's own line on stderr as libxmtp opens its database: harmless, and out of
# reach (docs/bridge.md)
SQLCIPHER = "WARN CORE sqlcipherCodecAttach: no codec attached to db"


def json_lines(lines: list[str]) -> list[dict[str, str]]:
    """Every line as JSON (it fails on one that is not), but SQLCipher's."""
    return [json.loads(line) for line in lines if not line.endswith(SQLCIPHER)]


def health(*options: str, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "gateway", "health", *options], cwd=ROOT,
        env=env or os.environ, capture_output=True, text=True, timeout=30, check=False)


class TestAGatewayStarting:
    def test_it_says_it_listens_only_once_it_answers(self, running: Running) -> None:
        port = running.setup.port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
        listening = [i for i, line in enumerate(running.lines) if "gateway listening" in line]
        devnode = [i for i, line in enumerate(running.lines) if "embedded XMTP devnode" in line]
        assert len(listening) == 1 and devnode and devnode[0] < listening[0], running.lines

    def test_its_migrations_say_one_line_and_alembic_says_nothing(
            self, running: Running) -> None:
        assert not [line for line in running.lines if "alembic" in line], running.lines
        upgraded = [line for line in running.lines if "database schema upgraded" in line]
        assert len(upgraded) == 1, running.lines

    def test_a_second_gateway_on_its_data_dir_and_port_fails_at_once_naming_it(
            self, running: Running) -> None:
        result = running.setup.serve()
        assert result.returncode == 1, result.stdout
        line = one_line(result.stdout)
        assert (f"ERROR gateway.serve: another gateway is using {running.setup.data_dir} "
                f"(pid {running.proc.pid}); stop it") in line

    def test_the_port_option_wins_over_the_config_and_the_public_url_follows(
            self, running: Running) -> None:
        port = running.setup.port
        [listening] = [entry for entry in json_lines(running.lines)
                       if "gateway listening" in entry["message"]]
        assert listening["message"] == (f"gateway listening on 127.0.0.1:{port} "
                                        f"(public URL http://127.0.0.1:{port})")

    def test_libxmtps_own_log_comes_as_json_lines_of_its_own_loggers_without_colours(
            self, running: Running) -> None:
        entries = json_lines(running.lines)
        assert any(entry["logger"].startswith("libxmtp.xmtp_mls") for entry in entries)
        assert "\x1b[" not in "".join(running.lines)

    def test_health_finds_it_through_the_option_or_the_environment(
            self, running: Running) -> None:
        port, config = running.setup.port, str(ROOT / "config" / "gateway.yaml")
        by_option = health("--config", config, "--port", str(port))
        assert (by_option.returncode, by_option.stdout) == (
            0, f"http://127.0.0.1:{port}/healthz: ok\n")
        by_env = health("--config", config, env={**os.environ, "GATEWAY_PORT": str(port)})
        assert by_env.returncode == 0, by_env.stderr

    def test_sigterm_stops_it_with_status_0_and_every_line_still_json(
            self, running: Running) -> None:
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(30) == 0
        lines = running.log_path.read_text().splitlines()
        entries = json_lines(lines)
        assert "\x1b[" not in "".join(lines)
        # libxmtp's workers outlive its client's close: expected, so not errors
        assert [e for e in entries if e["level"] == "ERROR"] == [], entries[-10:]


class TestHealth:
    def test_fails_in_one_line_when_nothing_answers(self, setup: Setup) -> None:
        result = health("--config", str(setup.config))
        assert result.returncode == 1
        assert result.stderr == (f"gateway health: http://127.0.0.1:{setup.port}/healthz: "
                                 "connection refused\n")


class TestABusyPort:
    def test_gives_one_line_and_status_1_and_starts_nothing(self, setup: Setup) -> None:
        with socket.create_server(("127.0.0.1", setup.port)):
            result = setup.serve()
        assert result.returncode == 1, result.stdout
        line = one_line(result.stdout)
        assert line.endswith(f"ERROR gateway.serve: cannot listen on 127.0.0.1:{setup.port}: "
                             "address already in use"), line
        assert setup.started() == []
        assert not setup.data_dir.exists()  # no secrets.yaml, no empty database

    def test_names_a_gateway_port_that_is_not_a_port(self, setup: Setup) -> None:
        result = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "gateway", "serve", "--config", str(setup.config)],
            cwd=ROOT, env={**setup.env(), "GATEWAY_PORT": "80800"}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=60, check=False)
        assert result.returncode == 1
        assert "GATEWAY_PORT: '80800' is not a port" in result.stdout
        assert not setup.data_dir.exists()

    def test_frees_the_data_dir_again(self, setup: Setup) -> None:
        with socket.create_server(("127.0.0.1", setup.port)):
            setup.serve()
        with exclusive_data_dir(setup.data_dir):
            pass


class TestADataDirInUse:
    def test_gives_one_line_naming_its_owner_and_starts_nothing(self, setup: Setup) -> None:
        setup.data_dir.mkdir(parents=True)
        with exclusive_data_dir(setup.data_dir):
            result = setup.serve()
        assert result.returncode == 1, result.stdout
        assert re.search(rf"another gateway is using {re.escape(str(setup.data_dir))} "
                         rf"\(pid {os.getpid()}\)", one_line(result.stdout))
        assert setup.started() == []
        with contextlib.closing(socket.socket()) as probe:  # the port was never bound
            assert probe.connect_ex(("127.0.0.1", setup.port)) != 0

    def test_stops_the_demo_too_before_it_starts_anything(self, setup: Setup) -> None:
        setup.data_dir.mkdir(parents=True)
        with exclusive_data_dir(setup.data_dir):
            result = subprocess.run(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "gateway", "demo", "--script", "--config",
                 str(setup.config)], cwd=ROOT, env=setup.env(), stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, timeout=60, check=False)
        assert result.returncode == 1, result.stdout
        assert one_line(result.stdout).startswith(
            f"gateway demo: another gateway is using {setup.data_dir} (pid {os.getpid()})")
        assert setup.started() == []


class TestADevnodeDatabaseInUse:
    def test_stops_the_gateway_with_one_error_and_no_traceback(self, setup: Setup) -> None:
        # a standalone devnode on the database the embedded one would use
        storage = DevNodeStorage(str(setup.data_dir / "devnode.db"))
        try:
            result = setup.serve()
        finally:
            storage.close()
        assert result.returncode == 1, result.stdout
        assert "Traceback" not in result.stdout
        [error] = [line for line in result.stdout.splitlines() if "ERROR" in line]
        assert "the gateway could not start: another devnode is using" in error
        assert f"(pid {os.getpid()})" in error
