"""What the API takes from the gateway's config: the (proxy, channel) routes the rules
serve and the gateway's own wallet."""

from __future__ import annotations

from pathlib import Path

from gateway.api.settings import ApiSettings
from gateway.config import parse_config
from gateway.domain.models import Channel
from tests.unit.config_fixtures import minimal


class TestApiSettingsFromConfig:
    def test_each_rule_s_proxy_is_served_on_its_own_channels_only(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["rules"][0]["channels"] = ["sms", "whatsapp"]
        config = parse_config(raw, base_dir=tmp_path, env={})
        settings = ApiSettings.from_config(config)
        assert settings.routes == {("+15550100001", Channel.SMS),
                                   ("+15550100001", Channel.WHATSAPP),
                                   ("+15550100002", Channel.SMS)}
        assert settings.proxies == {"+15550100001", "+15550100002"}

    def test_the_gateway_s_wallet_is_its_xmtp_identity(self, tmp_path: Path) -> None:
        config = parse_config(minimal(), base_dir=tmp_path, env={})
        settings = ApiSettings.from_config(config)
        assert settings.gateway_wallet == config.xmtp.wallet_address
