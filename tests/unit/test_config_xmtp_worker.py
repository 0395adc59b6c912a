"""``xmtp.worker``: which process does the XMTP work. A process without it needs the
PostgreSQL database it shares with the one that has it, and no embedded devnode; the
example config takes it from GATEWAY_XMTP_WORKER; check-config says what it means."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from gateway.config import load_config, parse_config
from gateway.config.report import check
from gateway.errors import ConfigError
from tests.unit.config_fixtures import minimal

ROOT = Path(__file__).resolve().parents[2]
POSTGRES = "postgresql+asyncpg://gw@db.internal/gateway"


def problems(raw: dict[str, object], tmp_path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as refused:
        parse_config(raw, base_dir=tmp_path, env={})
    return dict(refused.value.problems)


class TestXmtpWorker:
    def test_is_on_by_default(self, tmp_path: Path) -> None:
        assert parse_config(minimal(), base_dir=tmp_path, env={}).xmtp.worker is True

    def test_off_needs_postgresql(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["xmtp"]["worker"] = False
        found = problems(raw, tmp_path)
        assert "PostgreSQL" in found["xmtp"], found
        raw["database"]["url"] = POSTGRES
        assert parse_config(raw, base_dir=tmp_path, env={}).xmtp.worker is False

    def test_off_refuses_an_embedded_devnode(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["database"]["url"] = POSTGRES
        raw["xmtp"].update(worker=False, node_url=None, devnode={"embedded": True})
        assert "devnode" in problems(raw, tmp_path)["xmtp"]

    def test_the_example_takes_it_from_the_environment(self, tmp_path: Path) -> None:
        env = {"GATEWAY_XMTP_WORKER": "false", "GATEWAY_DATABASE_URL": POSTGRES}
        text = (ROOT / "config" / "gateway.example.yaml").read_text()
        assert "worker: ${GATEWAY_XMTP_WORKER:-true}" in text
        # as deployed: the XMTP process's node, not an embedded one
        text = text.replace("embedded: true ", "embedded: false ", 1).replace(
            "node_url: null", "node_url: http://127.0.0.1:5556", 1)
        config = tmp_path / "gateway.yaml"
        config.write_text(text)
        assert load_config(config, env=env, persist_secrets=False).xmtp.worker is False
        assert load_config(config, env={**env, "GATEWAY_XMTP_WORKER": "true"},
                           persist_secrets=False).xmtp.worker is True

    def test_check_config_says_this_process_does_no_xmtp_work(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["database"]["url"] = POSTGRES
        raw["xmtp"]["worker"] = False
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(raw))
        out = io.StringIO()
        assert check(path, out=out) == 0
        assert "xmtp.worker is false: this process does no XMTP work" in out.getvalue()
