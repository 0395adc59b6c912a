"""`gateway …`: what the argument parser accepts before any subcommand runs."""

import subprocess
import sys
import typing
from pathlib import Path

import pytest

from gateway import cli
from gateway.cli import build_parser
from gateway.config.types import LogLevel

REPO = Path(__file__).resolve().parents[2]
PORTED = ["devnode", "twilio-sim"]  # every subcommand that takes --port


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The parser's complaint about ``argv``; fails unless it exits with status 2. Only
    the parser runs: were ``argv`` taken, the command must not start a server."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err


class TestPorts:
    @pytest.mark.parametrize("command", PORTED)
    @pytest.mark.parametrize("value", ["80800", "65536", "-1", "http"])
    def test_a_port_outside_0_to_65535_is_refused(
            self, command: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
        err = refused([command, "--port", value], capsys)
        assert f"argument --port: {value!r} is not a port" in err
        assert "0 (any free port) to 65535" in err

    @pytest.mark.parametrize("command", PORTED)
    @pytest.mark.parametrize(("value", "parsed"), [("0", 0), ("5556", 5556), ("65535", 65535)])
    def test_a_port_in_range_is_taken_as_a_number(
            self, command: str, value: str, parsed: int) -> None:
        assert build_parser().parse_args([command, "--port", value]).port == parsed


class TestDevnodeLogLevel:
    def test_an_unknown_level_is_refused_naming_the_choices(
            self, capsys: pytest.CaptureFixture[str]) -> None:
        err = refused(["devnode", "--log-level", "verbose"], capsys)
        assert "argument --log-level: invalid choice" in err
        assert "'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'" in err

    def test_a_level_is_taken_in_any_case(self) -> None:
        assert build_parser().parse_args(["devnode", "--log-level", "debug"]).log_level == "DEBUG"

    def test_the_levels_are_the_configs(self) -> None:
        assert typing.get_args(typing.get_args(LogLevel)[0]) == cli.LOG_LEVELS


class TestHelp:
    def test_describes_the_tool_to_its_user_not_its_developers(self) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "--help"],
            capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
        assert done.returncode == 0
        text = " ".join(done.stdout.split())
        assert "between XMTP wallet chat and SMS/WhatsApp" in text
        assert "gateway COMMAND --help" in text
        for command in ["serve", "devnode", "demo", "check-config", "db", "twilio-sim"]:
            assert command in text
        for developer_talk in ["lazily", "``", "this file", "loads twilio"]:
            assert developer_talk not in text
