"""${ENV} interpolation and `generate` secrets."""

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import load_config, parse_config
from gateway.config.sources import SECRETS_FILE
from gateway.errors import ConfigError
from tests.unit.config_fixtures import AUTH_TOKEN, minimal

REPO = Path(__file__).resolve().parents[2]


class TestEnvironmentInterpolation:
    def test_a_variable_fills_a_value(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["twilio"]["auth_token"] = "${TOKEN}"
        raw["server"] = {"port": "${PORT}", "public_url": "https://${HOST}/gw"}
        config = parse_config(raw, base_dir=tmp_path,
                              env={"TOKEN": AUTH_TOKEN, "PORT": "9000", "HOST": "gw.example.org"})
        assert config.twilio.auth_token is not None
        assert config.twilio.auth_token.get_secret_value() == AUTH_TOKEN
        assert config.server.port == 9000
        assert config.server.public_url == "https://gw.example.org/gw"

    def test_a_missing_variable_names_the_key_path(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["rules"][1]["greeting"] = "hello ${WHO}"
        with pytest.raises(ConfigError) as refused:
            parse_config(raw, base_dir=tmp_path, env={})
        assert refused.value.problems == [
            ("rules[1].greeting", "environment variable WHO is not set")]

    def test_defaults_apply_when_unset_or_empty(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["server"] = {"host": "${HOST:-0.0.0.0}", "log_level": "${LEVEL:-debug}"}
        config = parse_config(raw, base_dir=tmp_path, env={"LEVEL": ""})
        assert config.server.host == "0.0.0.0"  # noqa: S104 - a value under test, not a bind
        assert config.server.log_level == "DEBUG"

    def test_a_double_dollar_is_a_literal_dollar(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["rules"][0]["greeting"] = "costs $$5, not ${PRICE:-$$6}"
        config = parse_config(raw, base_dir=tmp_path, env={})
        assert config.rules[0].greeting == "costs $5, not $$6"

    def test_a_malformed_reference_is_a_problem(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["rules"][0]["greeting"] = "hi ${BROKEN"
        with pytest.raises(ConfigError, match=r"rules\[0\].greeting: malformed reference"):
            parse_config(raw, base_dir=tmp_path, env={})

    def test_keys_are_not_interpolated(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["directory"] = {"${ALIAS}": raw["directory"]["alice"]}
        with pytest.raises(ConfigError, match="directory"):
            parse_config(raw, base_dir=tmp_path, env={"ALIAS": "alice"})


class TestGeneratedSecrets:
    def test_the_default_config_runs_with_nothing_typed(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "data"))
        config = load_config(REPO / "config" / "gateway.yaml")
        assert config.twilio.simulator.embedded and config.xmtp.devnode.embedded
        assert config.database.url == f"sqlite+aiosqlite:///{tmp_path}/data/gateway.db"
        book = config.rulebook()
        assert config.demo is not None
        assert book.directory["demo"] == config.demo.wallet_address
        support, dial = book.get("support"), book.get("dial")
        assert support is not None and support.wallets == (config.demo.wallet_address,)
        assert support.proxy == "+15550100001"
        assert dial is not None and dial.proxy == "+15550100002" and not dial.wallets

    def test_secrets_are_made_once_and_reused(self, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path))
        first = load_config(REPO / "config" / "gateway.yaml")
        second = load_config(REPO / "config" / "gateway.yaml")
        assert first.secret_values() == second.secret_values()
        assert first.xmtp.wallet_address == second.xmtp.wallet_address
        assert first.twilio.account_sid == second.twilio.account_sid
        assert first.xmtp.wallet_address != first.demo.wallet_address  # type: ignore[union-attr]

    def test_the_secrets_file_is_private(self, tmp_path: Path) -> None:
        parse_config(self._generating(), base_dir=tmp_path, env={})
        file = tmp_path / "data" / SECRETS_FILE
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        stored = yaml.safe_load(file.read_text())
        assert set(stored) == {"database.encryption_keys.k1", "xmtp.wallet_key",
                               "xmtp.db_encryption_key", "twilio.auth_token",
                               "twilio.account_sid"}

    def test_a_secrets_file_others_can_read_is_refused(self, tmp_path: Path) -> None:
        parse_config(self._generating(), base_dir=tmp_path, env={})
        os.chmod(tmp_path / "data" / SECRETS_FILE, 0o644)
        with pytest.raises(ConfigError, match="chmod 600"):
            parse_config(self._generating(), base_dir=tmp_path, env={})

    def test_a_new_generate_key_is_added_beside_the_old(self, tmp_path: Path) -> None:
        first = parse_config(self._generating(), base_dir=tmp_path, env={})
        raw = self._generating()
        raw["database"]["encryption_keys"]["k2"] = "generate"
        second = parse_config(raw, base_dir=tmp_path, env={})
        keys = second.database.key_bytes()
        assert keys["k1"] == first.database.key_bytes()["k1"]
        assert len(keys["k2"]) == 32 and keys["k2"] != keys["k1"]

    def test_checking_without_persisting_writes_nothing(self, tmp_path: Path) -> None:
        config = parse_config(self._generating(), base_dir=tmp_path, env={},
                              persist_secrets=False)
        assert config.xmtp.wallet_address.startswith("0x")
        assert not (tmp_path / "data").exists()

    def test_checking_reads_secrets_already_made(self, tmp_path: Path) -> None:
        made = parse_config(self._generating(), base_dir=tmp_path, env={})
        checked = parse_config(self._generating(), base_dir=tmp_path, env={},
                               persist_secrets=False)
        assert checked.xmtp.wallet_address == made.xmtp.wallet_address

    def test_checking_names_the_secrets_it_made_up_and_only_those(self, tmp_path: Path) -> None:
        made_up: set[str] = set()
        parse_config(self._generating(), base_dir=tmp_path, env={}, persist_secrets=False,
                     made_up=made_up)
        assert "xmtp.wallet_key" in made_up
        parse_config(self._generating(), base_dir=tmp_path, env={})
        made_up.clear()
        parse_config(self._generating(), base_dir=tmp_path, env={}, persist_secrets=False,
                     made_up=made_up)
        assert made_up == set()

    def test_a_real_twilio_account_cannot_have_a_generated_token(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["twilio"]["auth_token"] = "generate"
        with pytest.raises(ConfigError) as refused:
            parse_config(raw, base_dir=tmp_path, env={})
        assert refused.value.problems == [
            ("twilio.auth_token", "'generate' is not supported for this key")]

    def test_in_a_rule_generate_is_text_as_written(self, tmp_path: Path) -> None:
        # rules hold no secrets: a greeting or a template variable may say "generate"
        raw = minimal()
        rule = raw["rules"][0]
        rule["greeting"] = "generate"
        rule["outbound"] = {"whatsapp_template": {
            "content_sid": "HX" + "0" * 32, "variables": {"1": "generate"}}}
        found = parse_config(raw, base_dir=tmp_path, env={}).rulebook().rules[0]
        assert found.greeting == "generate"
        assert found.outbound.whatsapp_template is not None
        assert found.outbound.whatsapp_template.variables == {"1": "generate"}

    def test_generate_is_refused_where_it_means_nothing(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["server"] = {"host": "generate"}
        with pytest.raises(ConfigError, match=r"server\.host: 'generate' is not supported"):
            parse_config(raw, base_dir=tmp_path, env={})

    def test_an_unwritable_data_dir_names_each_generated_key(self, tmp_path: Path) -> None:
        (tmp_path / "data").write_text("a file, not a directory")
        with pytest.raises(ConfigError) as refused:
            parse_config(self._generating(), base_dir=tmp_path, env={})
        assert "xmtp.wallet_key" in dict(refused.value.problems)

    @staticmethod
    def _generating() -> dict[str, Any]:
        raw = minimal()
        raw["database"]["encryption_keys"]["k1"] = "generate"
        raw["xmtp"]["wallet_key"] = "generate"
        raw["xmtp"]["db_encryption_key"] = "generate"
        raw["twilio"] = {"account_sid": "generate", "auth_token": "generate",
                         "simulator": {"embedded": True}}
        return raw
