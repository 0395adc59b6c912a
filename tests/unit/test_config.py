from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from gateway.config import GatewayConfig, load_config, parse_config
from gateway.domain.models import Channel
from gateway.domain.rules import RuleMode
from gateway.errors import ConfigError
from tests.unit.config_fixtures import (
    ALICE,
    AUTH_TOKEN,
    BOB,
    DB_KEY,
    WALLET_KEY,
    XMTP_DB_KEY,
    minimal,
)

REPO = Path(__file__).resolve().parents[2]


def problems_of(raw: Any, tmp_path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as refused:
        parse_config(raw, base_dir=tmp_path, env={})
    return dict(refused.value.problems)


class TestAValidConfig:
    def test_parses_into_frozen_typed_sections(self, tmp_path: Path) -> None:
        config = parse_config(minimal(), base_dir=tmp_path, env={})
        assert config.data_dir == tmp_path / "data"
        assert config.server.public_url == "http://127.0.0.1:8080"
        assert config.twilio.rate_limits.for_number("+15550100001") == 1.0
        with pytest.raises(ValidationError):
            config.server.port = 9  # type: ignore[misc]

    def test_converts_to_a_rulebook(self, tmp_path: Path) -> None:
        book = parse_config(minimal(), base_dir=tmp_path, env={}).rulebook()
        support = book.match("+15550100001", Channel.SMS)
        assert support is not None and support.wallets == (ALICE, BOB)
        dial = book.get("dial")
        assert dial is not None and dial.mode is RuleMode.DIAL and dial.wallets == ()
        assert book.match("+15550100001", Channel.WHATSAPP) is None  # sms is the default

    def test_public_url_defaults_to_the_listening_address(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["server"] = {"host": "0.0.0.0", "port": 9000}  # noqa: S104 - config under test
        config = parse_config(raw, base_dir=tmp_path, env={})
        assert config.server.public_url == "http://127.0.0.1:9000"
        raw["server"]["public_url"] = "https://gw.example.org/"
        config = parse_config(raw, base_dir=tmp_path, env={})
        assert config.server.public_url == "https://gw.example.org"

    def test_another_listen_address_takes_a_local_public_url_along(
            self, tmp_path: Path) -> None:
        raw = minimal()
        derived = parse_config(raw, base_dir=tmp_path, env={}).listening_on(port=9001)
        assert (derived.server.port, derived.server.public_url) == (
            9001, "http://127.0.0.1:9001")
        raw["server"] = {"port": 8080, "public_url": "http://127.0.0.1:8080"}  # as written
        written = parse_config(raw, base_dir=tmp_path, env={}).listening_on(
            "0.0.0.0", 9002)  # noqa: S104 - config under test
        assert (written.server.host, written.server.public_url) == (
            "0.0.0.0", "http://127.0.0.1:9002")  # noqa: S104

    def test_another_listen_address_keeps_a_configured_public_url(
            self, tmp_path: Path) -> None:
        raw = minimal()
        raw["server"] = {"public_url": "https://gw.example.org"}
        config = parse_config(raw, base_dir=tmp_path, env={}).listening_on(port=9001)
        assert (config.server.port, config.server.public_url) == (
            9001, "https://gw.example.org")
        unchanged = parse_config(raw, base_dir=tmp_path, env={}).listening_on()
        assert unchanged.server.port == 8080

    def test_relative_paths_live_under_data_dir(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["data_dir"] = "state"
        raw["database"]["url"] = "sqlite+aiosqlite:///db/gw.db"
        config = parse_config(raw, base_dir=tmp_path, env={})
        assert config.data_dir == tmp_path / "state"
        assert config.database.url == f"sqlite+aiosqlite:///{tmp_path}/state/db/gw.db"
        assert config.xmtp.db_path == tmp_path / "state" / "xmtp" / "gateway.db3"
        assert config.xmtp.devnode.db == tmp_path / "state" / "devnode.db"

    def test_absolute_and_memory_databases_are_kept(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["database"]["url"] = "sqlite+aiosqlite:///:memory:"
        assert parse_config(raw, base_dir=tmp_path, env={}).database.url.endswith(":memory:")
        raw["database"]["url"] = "sqlite+aiosqlite:////var/lib/gw.db"
        assert parse_config(raw, base_dir=tmp_path,
                            env={}).database.url == "sqlite+aiosqlite:////var/lib/gw.db"

    def test_lowercase_wallets_are_stored_checksummed(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["directory"]["alice"] = ALICE.lower()
        raw["rules"][0]["wallets"] = [BOB.lower()]
        config = parse_config(raw, base_dir=tmp_path, env={})
        assert config.directory["alice"] == ALICE
        assert config.rulebook().rules[0].wallets == (BOB,)

    def test_keys_decode_to_bytes(self, tmp_path: Path) -> None:
        config = parse_config(minimal(), base_dir=tmp_path, env={})
        assert config.database.key_bytes() == {"k1": bytes(range(32))}
        assert config.xmtp.db_encryption_key_bytes() == bytes.fromhex(XMTP_DB_KEY)
        assert config.xmtp.wallet_address.startswith("0x")

    def test_the_demo_wallet_joins_the_directory(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["demo"] = {"wallet_key": "0x" + "33" * 32}
        raw["rules"][0]["wallets"] = ["demo"]
        config = parse_config(raw, base_dir=tmp_path, env={})
        assert config.demo is not None
        assert config.wallet_directory["demo"] == config.demo.wallet_address
        assert config.rulebook().rules[0].wallets == (config.demo.wallet_address,)

    def test_a_postgres_url_never_shows_its_password(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["database"]["url"] = "postgresql+asyncpg://gw:hunter2secret@db.internal/gw"
        config = parse_config(raw, base_dir=tmp_path, env={})
        assert "hunter2secret" not in repr(config)
        assert "hunter2secret" in config.secret_values()  # redacted if a driver quotes it
        assert config.database.safe_url == "postgresql+asyncpg://gw:***@db.internal/gw"


class TestSecretsStaySecret:
    def test_repr_and_str_show_no_secret(self, tmp_path: Path) -> None:
        config = parse_config(minimal(), base_dir=tmp_path, env={})
        for shown in (repr(config), str(config), config.model_dump_json()):
            for secret in (DB_KEY, WALLET_KEY, XMTP_DB_KEY, AUTH_TOKEN):
                assert secret not in shown

    def test_secret_values_lists_each_for_the_log_filter(self, tmp_path: Path) -> None:
        config = parse_config(minimal(), base_dir=tmp_path, env={})
        assert {DB_KEY, WALLET_KEY, XMTP_DB_KEY, AUTH_TOKEN} <= set(config.secret_values())

    def test_an_error_about_a_secret_does_not_quote_it(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["xmtp"]["wallet_key"] = "0x" + "zz" * 32
        with pytest.raises(ConfigError) as refused:
            parse_config(raw, base_dir=tmp_path, env={})
        assert "zz" * 32 not in str(refused.value)
        assert "xmtp.wallet_key" in dict(refused.value.problems)


class TestKeyPathErrors:
    def test_a_bad_proxy_names_its_rule_index(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["rules"].append({"name": "third", "proxy": "555-0100", "wallets": [BOB]})
        problems = problems_of(raw, tmp_path)
        assert problems == {"rules[2].proxy": "not an E.164 number (no leading '+')"}

    def test_unknown_keys_are_refused_with_a_suggestion(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["rules"][0]["greting"] = "hi"
        raw["server"] = {"prot": 80}
        raw["extra_section"] = {}
        problems = problems_of(raw, tmp_path)
        assert problems["rules[0].greting"] == "unknown key (did you mean 'greeting'?)"
        assert problems["server.prot"] == "unknown key (did you mean 'port'?)"
        assert problems["extra_section"].startswith("unknown key")

    def test_missing_sections_are_required(self, tmp_path: Path) -> None:
        raw = minimal()
        del raw["xmtp"]
        assert problems_of(raw, tmp_path) == {"xmtp": "required"}

    def test_every_problem_is_reported_at_once(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["server"] = {"port": 70000, "log_format": "xml"}
        raw["twilio"]["account_sid"] = "AB123"
        raw["directory"]["bob"] = ALICE[:-1] + "b"  # a checksum typo
        raw["rules"][0]["allow"] = {"countries": ["XX"], "prefixes": ["44"]}
        raw["rules"][1]["sender_label"] = "{nick}: "
        problems = problems_of(raw, tmp_path)
        assert set(problems) == {
            "server.port", "server.log_format", "twilio.account_sid", "directory.bob",
            "rules[0].allow.countries[0]", "rules[0].allow.prefixes[0]",
            "rules[1].sender_label"}
        assert "checksum" in problems["directory.bob"]
        assert "nick" in problems["rules[1].sender_label"]

    def test_rule_names_are_unique(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["rules"][1]["name"] = "support"
        assert problems_of(raw, tmp_path) == {
            "rules[1].name": "duplicate rule name 'support' (also rules[0])"}

    def test_one_rule_per_proxy_and_channel(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["rules"][1]["proxy"] = "+1 555 010 0001"
        problems = problems_of(raw, tmp_path)
        assert problems == {
            "rules[1].proxy": "+15550100001 on sms is already claimed by rules[0]"}

    def test_one_number_may_carry_two_rules_on_different_channels(self,
                                                                  tmp_path: Path) -> None:
        raw = minimal()
        raw["rules"][1]["proxy"] = "+15550100001"
        raw["rules"][1]["channels"] = ["whatsapp"]
        assert len(parse_config(raw, base_dir=tmp_path, env={}).rules) == 2

    def test_fixed_rules_need_wallets_and_dial_rules_have_none(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["rules"][0]["wallets"] = []
        raw["rules"][1]["wallets"] = [ALICE]
        problems = problems_of(raw, tmp_path)
        assert problems == {
            "rules[0].wallets": "a fixed rule needs one or more wallets",
            "rules[1].wallets": "a dial rule has no wallets: the phone names one"}

    def test_aliases_must_resolve(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["rules"][0]["wallets"] = ["alice", "carol"]
        assert problems_of(raw, tmp_path) == {
            "rules[0].wallets[1]": "unknown alias 'carol': add it to directory"}

    def test_channels_are_sms_or_whatsapp(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["rules"][0]["channels"] = ["xmtp"]
        raw["rules"][1]["channels"] = []
        problems = problems_of(raw, tmp_path)
        assert set(problems) == {"rules[0].channels[0]", "rules[1].channels"}

    def test_the_active_key_must_exist(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["database"]["active_key"] = "k2"
        assert "k2" in problems_of(raw, tmp_path)["database"]

    def test_database_keys_are_32_bytes_of_base64(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["database"]["encryption_keys"]["k2"] = "c2hvcnQ="
        raw["database"]["encryption_keys"]["k3"] = "not base64!"
        problems = problems_of(raw, tmp_path)
        assert problems == {"database.encryption_keys.k2": "must decode to 32 bytes, not 5",
                            "database.encryption_keys.k3": "not base64"}

    def test_local_xmtp_needs_a_node(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["xmtp"]["node_url"] = None
        assert "node_url" in problems_of(raw, tmp_path)["xmtp"]
        raw["xmtp"]["devnode"] = {"embedded": True}
        assert parse_config(raw, base_dir=tmp_path, env={}).xmtp.devnode.embedded

    def test_an_embedded_simulator_takes_no_api_base_url(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["twilio"]["simulator"] = {"embedded": True}
        raw["twilio"]["api_base_url"] = "http://127.0.0.1:8788"
        assert "api_base_url" in problems_of(raw, tmp_path)["twilio"]

    def test_webhook_urls_need_a_secret(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["webhooks"] = {"urls": ["https://hooks.example.org/gw"]}
        assert "secret" in problems_of(raw, tmp_path)["webhooks"]

    def test_api_tokens_must_not_be_short(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["api"] = {"tokens": ["short"]}
        assert "api.tokens[0]" in problems_of(raw, tmp_path)

    def test_a_non_mapping_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="mapping"):
            parse_config(["rules"], base_dir=tmp_path)


class TestPlaceholders:
    @pytest.mark.parametrize("value", [
        "changeme", "CHANGE-ME", "xxx", "XXXXXXXX", "<your auth token>", "TODO",
        "your-token-here", "your_auth_token_here", "...", "replace_me"])
    def test_placeholder_values_are_refused(self, value: str, tmp_path: Path) -> None:
        raw = minimal()
        raw["twilio"]["auth_token"] = value
        problems = problems_of(raw, tmp_path)
        assert list(problems) == ["twilio.auth_token"]
        assert "placeholder" in problems["twilio.auth_token"]

    def test_ordinary_values_mentioning_those_words_pass(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["rules"][0]["greeting"] = "Reply TODO to get your to-do list, or <3 us"
        raw["server"] = {"public_url": "https://example.org"}
        parse_config(raw, base_dir=tmp_path, env={})


class TestLoadingFiles:
    def test_the_example_config_loads_and_documents_every_key(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path))
        example = REPO / "config" / "gateway.example.yaml"
        config = load_config(example)
        assert isinstance(config, GatewayConfig)
        raw = yaml.safe_load(example.read_text())
        undocumented = [path for path in _model_paths(GatewayConfig) if not _has(raw, path)]
        assert undocumented == []

    def test_a_missing_file_is_a_config_error(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="cannot read"):
            load_config(tmp_path / "nope.yaml")

    @pytest.mark.parametrize(("content", "says"), [
        (b"\x00\xff\xfe", "not UTF-8 (byte 0xff at offset 1)"),
        ("data_dir: caf\u00e9\n".encode("latin-1"), "not UTF-8 (byte 0xe9 at offset 13)"),
    ], ids=["binary", "latin-1"])
    def test_a_file_that_is_not_utf8_is_a_config_error_naming_the_byte(
            self, tmp_path: Path, content: bytes, says: str) -> None:
        file = tmp_path / "gw.yaml"
        file.write_bytes(content)
        with pytest.raises(ConfigError) as raised:
            load_config(file)
        assert raised.value.problems == [("", f"cannot read {file}: {says}")]

    def test_broken_yaml_is_a_config_error(self, tmp_path: Path) -> None:
        file = tmp_path / "gw.yaml"
        file.write_text("rules: [\n")
        with pytest.raises(ConfigError, match="not valid YAML"):
            load_config(file)

    def test_data_dir_is_relative_to_the_config_file(self, tmp_path: Path) -> None:
        (tmp_path / "conf").mkdir()
        file = tmp_path / "conf" / "gw.yaml"
        raw = minimal()
        raw["data_dir"] = "../state"
        file.write_text(yaml.safe_dump(raw))
        assert load_config(file).data_dir == tmp_path / "state"


def _model_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every field path of the config model, nested sections included. Lists of
    sections (rules) are entered through their first element."""
    found = []
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        found.append(path)
        inner = _section_of(field.annotation)
        if inner is not None:
            found += _model_paths(inner, path)
    return found


def _section_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _section_of(arg)
        if found is not None:
            return found
    return None


def _has(raw: Any, path: tuple[str, ...]) -> bool:
    for part in path:
        if isinstance(raw, list):
            raw = next((item for item in raw if isinstance(item, dict) and part in item), None)
            if raw is None:
                return False
        if not isinstance(raw, dict) or part not in raw:
            return False
        raw = raw[part]
    return True
