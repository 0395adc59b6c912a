"""``xmtp.gateway_host`` (XMTP's decentralised network) and the devnode's caps in the
config and in check-config, and libxmtp's errors as the gateway translates them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from gateway.config import parse_config
from gateway.config.report import check
from gateway.errors import (
    ChatNetworkError,
    ConfigError,
    InboxLogFull,
    InstallationLimitReached,
    XmtpGatewayUnavailable,
)
from gateway.xmtp.library_errors import translate
from gateway.xmtp.network import gateway_access, node_url_for
from tests.unit.config_fixtures import minimal

GATEWAY = "https://xmtp-gateway.example.org"
TOKEN = "Bearer s3cret-payer-gateway-token"


def problems(raw: dict[str, object], tmp_path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as refused:
        parse_config(raw, base_dir=tmp_path, env={})
    return dict(refused.value.problems)


class TestTheConfig:
    def test_a_gateway_host_with_a_token_reaches_the_client_settings(
            self, tmp_path: Path) -> None:
        raw = minimal()
        raw["xmtp"].update(env="production", node_url=None, gateway_host=GATEWAY + "/",
                           gateway_auth={"token": TOKEN})
        config = parse_config(raw, base_dir=tmp_path, env={})
        access = gateway_access(config.xmtp)
        assert access is not None
        assert (access.host, access.auth_token, access.auth_header) == (
            GATEWAY, TOKEN, "authorization")
        assert TOKEN not in repr(access) and TOKEN not in repr(config)
        assert TOKEN in config.secret_values()

    def test_without_a_gateway_host_libxmtp_uses_the_v3_node(self, tmp_path: Path) -> None:
        config = parse_config(minimal(), base_dir=tmp_path, env={})
        assert gateway_access(config.xmtp) is None

    def test_env_local_may_name_only_a_gateway_host(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["xmtp"].update(node_url=None, gateway_host="http://127.0.0.1:5050")
        config = parse_config(raw, base_dir=tmp_path, env={})
        assert node_url_for(config.xmtp) == "http://127.0.0.1:5050"

    def test_the_embedded_devnode_cannot_be_a_gateway(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["xmtp"].update(node_url=None, gateway_host=GATEWAY, devnode={"embedded": True})
        assert "devnode serves XMTP's v3 API only" in problems(raw, tmp_path)["xmtp"]

    def test_a_token_needs_a_gateway_host(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["xmtp"]["gateway_auth"] = {"token": TOKEN}
        assert problems(raw, tmp_path)["xmtp"] == "gateway_auth.token needs gateway_host"


class TestCheckConfig:
    def check_notes(self, tmp_path: Path, xmtp: dict[str, object], *,
                    about: str = "gateway_host") -> list[str]:
        raw = minimal()
        raw["xmtp"].update(xmtp)
        file = tmp_path / "gw.yaml"
        file.write_text(yaml.safe_dump(raw))
        out = io.StringIO()
        assert check(file, out) == 0
        return [line for line in out.getvalue().splitlines()
                if line.startswith("note:") and about in line]

    def test_explains_a_gateway_host_in_a_note(self, tmp_path: Path) -> None:
        [note] = self.check_notes(tmp_path, {"gateway_host": GATEWAY,
                                             "gateway_auth": {"token": TOKEN}})
        assert note.startswith("note: xmtp.gateway_host is set: libxmtp uses XMTP's "
                               "decentralised network")
        assert GATEWAY in note and "payer" in note and TOKEN not in note

    def test_says_what_a_production_config_without_one_uses(self, tmp_path: Path) -> None:
        [note] = self.check_notes(tmp_path, {"env": "production", "node_url": None})
        assert "libxmtp uses XMTP's v3 nodes (production)" in note

    def test_shows_the_caps_of_an_embedded_devnode(self, tmp_path: Path) -> None:
        network, caps = self.check_notes(tmp_path, {"node_url": None, "devnode": {
            "embedded": True, "max_installations": 10, "max_inbox_updates": 256}},
            about="devnode")
        assert network.startswith("note: xmtp.env is local: the embedded devnode")
        assert caps == ("note: the embedded devnode caps each inbox at 10 installations and "
                        "256 identity updates (XMTP's network: 10 and 256)")

    def test_says_a_local_node_is_not_xmtps_network(self, tmp_path: Path) -> None:
        [note] = self.check_notes(tmp_path, {"env": "local"}, about="xmtp.env")
        assert "not XMTP's network" in note and "cannot reach the gateway's wallet" in note


class TestLibxmtpErrors:
    def test_the_installation_cap_is_read_from_libxmtps_words(self) -> None:
        error = translate("connect", Exception(
            "[ClientBuilderError::Identity] Client builder error: Cannot register a new "
            "installation because the InboxID abc123 has already registered 10/10 "
            "installations. Please revoke existing installations first."))
        assert isinstance(error, InstallationLimitReached)
        assert (error.inbox_id, error.count, error.limit) == ("abc123", 10, 10)
        assert "gateway xmtp revoke" in str(error)

    def test_a_full_inbox_log_says_the_inbox_must_be_replaced(self) -> None:
        error = translate("register", Exception('status: Unknown, self: "inbox log is full"'),
                          inbox_id="abc")
        assert isinstance(error, InboxLogFull)
        assert "XMTP inbox abc" in str(error) and "new xmtp.wallet_key" in str(error)

    def test_a_gateway_host_that_does_not_serve_the_decentralised_api_is_named(
            self) -> None:
        error = translate("connect", Exception(
            'api client at endpoint "/xmtp.xmtpv4.payer_api.PayerApi/GetNodes" has error '
            "status: 'Operation is not implemented or not supported'"),
            gateway_host="http://127.0.0.1:5556")
        assert isinstance(error, XmtpGatewayUnavailable)
        assert str(error).startswith("xmtp.gateway_host http://127.0.0.1:5556: it does not "
                                     "serve XMTP's decentralised API")

    def test_other_errors_keep_libxmtps_first_line(self) -> None:
        error = translate("send text", Exception("boom\nAPI stats table"),
                          gateway_host=GATEWAY)
        assert type(error) is ChatNetworkError
        assert str(error) == "send text: boom …"
