"""Where ``gateway serve`` listens: the config's address, GATEWAY_HOST / GATEWAY_PORT over
it, --host / --port over those; and ``gateway health``, which finds it the same way."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.cli import build_parser
from gateway.listen import configured_address, overrides
from gateway.serve import config_for_command

REPO = Path(__file__).resolve().parents[2]
EMBEDDED = REPO / "config" / "gateway.yaml"
EXAMPLE = REPO / "config" / "gateway.example.yaml"


def serve_args(*argv: str) -> object:
    return build_parser().parse_args(["serve", *argv])


class TestOverrides:
    def test_the_options_win_over_the_environment_which_wins_over_the_config(self) -> None:
        env = {"GATEWAY_HOST": "0.0.0.0", "GATEWAY_PORT": "9000"}  # noqa: S104
        assert overrides(serve_args(), {}) == (None, None)
        assert overrides(serve_args(), env) == ("0.0.0.0", 9000)  # noqa: S104
        assert overrides(serve_args("--host", "::1", "--port", "9001"), env) == ("::1", 9001)

    @pytest.mark.parametrize("value", ["http", "80800", "-1"])
    def test_a_gateway_port_that_is_not_a_port_is_refused_by_name(self, value: str) -> None:
        with pytest.raises(ValueError, match=f"GATEWAY_PORT: '{re.escape(value)}' is not a "
                                             "port"):
            overrides(serve_args(), {"GATEWAY_PORT": value})


class TestTheServedConfig:
    def test_the_default_config_follows_the_environment_public_url_included(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("GATEWAY_PORT", "9000")
        config = config_for_command(serve_args("--config", str(EMBEDDED)),
                                    persist_secrets=False)
        assert config is not None
        assert (config.server.host, config.server.port) == ("127.0.0.1", 9000)
        # the embedded simulator signs its webhooks against it
        assert config.server.public_url == "http://127.0.0.1:9000"
        assert not (tmp_path / "data").exists()

    def test_a_configured_public_url_stays(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "data"))
        config = config_for_command(serve_args("--config", str(EXAMPLE), "--port", "9000"),
                                    persist_secrets=False, environ={})
        assert config is not None
        assert config.server.port == 9000
        assert config.server.public_url == "https://gateway.example.org"

    def test_a_bad_gateway_port_is_one_problem_and_no_config(
            self, capsys: pytest.CaptureFixture[str]) -> None:
        args = serve_args("--config", str(EMBEDDED))
        assert config_for_command(args, environ={"GATEWAY_PORT": "http"}) is None
        assert capsys.readouterr().err.splitlines() == [
            f"{EMBEDDED}: invalid configuration",
            "  GATEWAY_PORT: 'http' is not a port: use a whole number from 0 (any free "
            "port) to 65535"]


class TestHealthFindsTheSameAddress:
    @pytest.mark.parametrize("config", [EMBEDDED, EXAMPLE])
    def test_as_serve_reads_it_from_the_config(
            self, config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "data"))
        served = config_for_command(serve_args("--config", str(config)),
                                    persist_secrets=False, environ={})
        assert served is not None
        assert configured_address(config, {}) == (served.server.host, served.server.port)

    def test_with_env_references_expanded(self, tmp_path: Path) -> None:
        config = tmp_path / "gw.yaml"
        config.write_text("server:\n  host: ${HOST:-127.0.0.2}\n  port: ${PORT}\n")
        assert configured_address(config, {"PORT": "9100"}) == ("127.0.0.2", 9100)
        with pytest.raises(ValueError, match=r"server\.port: '' is not a port"):
            configured_address(config, {})


class TestTheDockerfile:
    def test_its_health_check_asks_the_configured_gateway_not_port_8080(self) -> None:
        text = (REPO / "Dockerfile").read_text()
        check = re.search(r"^HEALTHCHECK .*?(?<!\\)$", text, re.MULTILINE | re.DOTALL)
        assert check is not None
        assert '"gateway", "health"' in check.group(0)
        assert "8080" not in check.group(0)
