"""`gateway …`: what the argument parser accepts before any subcommand runs."""

import argparse
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from gateway import cli
from gateway.cli import build_parser
from gateway.config.types import LogLevel
from gateway.testing.twilio_sim import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, TwilioSimulator
from gateway.testing.twilio_sim.cli import banner

REPO = Path(__file__).resolve().parents[2]
PORTED = ["serve", "health", "devnode", "twilio-sim"]  # every subcommand that takes --port


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


def subcommands() -> dict[str, argparse.ArgumentParser]:
    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


class TestOptionHelp:
    def test_every_option_and_argument_of_every_command_says_what_it_is_for(self) -> None:
        missing = [f"{name} {action.dest}" for name, parser in subcommands().items()
                   for action in parser._actions
                   if not isinstance(action, argparse._HelpAction) and not action.help]
        assert missing == []

    def test_serve_takes_the_listen_address_as_options(self) -> None:
        args = build_parser().parse_args(["serve", "--host", "::", "--port", "9000"])
        assert (args.host, args.port) == ("::", 9000)
        assert build_parser().parse_args(["serve"]).port is None  # the config's

    def test_the_config_file_may_come_from_the_environment(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("GATEWAY_CONFIG", "/etc/gateway.yaml")
        assert build_parser().parse_args(["serve"]).config == "/etc/gateway.yaml"
        assert build_parser().parse_args(["check-config"]).path == "/etc/gateway.yaml"
        monkeypatch.delenv("GATEWAY_CONFIG")
        assert build_parser().parse_args(["serve"]).config == "config/gateway.yaml"


class TestTwilioSimHelp:
    def test_names_the_credentials_it_accepts_and_the_config_lines_for_a_gateway(
            self) -> None:
        text = subcommands()["twilio-sim"].format_help()
        assert "accepts only the account SID and auth token" in text
        assert (f"  twilio:\n    account_sid: {DEFAULT_ACCOUNT_SID}\n"
                f"    auth_token: {DEFAULT_AUTH_TOKEN}\n"
                "    api_base_url: http://127.0.0.1:8788\n"
                "    simulator:\n      embedded: false\n") in text

    def test_its_defaults_are_the_simulators(self) -> None:
        assert (cli.SIM_ACCOUNT_SID, cli.SIM_AUTH_TOKEN) == (DEFAULT_ACCOUNT_SID,
                                                             DEFAULT_AUTH_TOKEN)

    def test_its_banner_says_the_same_with_the_address_it_listens_on(self) -> None:
        sim = TwilioSimulator(account_sid="AC" + "1" * 32, auth_token="token-for-the-sim",
                              webhook_url="http://127.0.0.1:8080/twilio/messages")
        sim.url = "http://127.0.0.1:9999"
        text = banner(sim)
        assert text.startswith("twilio simulator listening on http://127.0.0.1:9999\n")
        assert ("accepts account SID " + "AC" + "1" * 32 + " with auth token "
                "token-for-the-sim and posts phones' texts to "
                "http://127.0.0.1:8080/twilio/messages") in text
        assert ("    account_sid: " + "AC" + "1" * 32 + "\n    auth_token: token-for-the-sim\n"
                "    api_base_url: http://127.0.0.1:9999\n") in text
