"""The ``media:`` section: defaults, the storage backends, and what check-config says."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import load_config, parse_config
from gateway.config.report import check
from gateway.errors import ConfigError
from gateway.media.wiring import media_limits
from tests.unit.config_fixtures import minimal

REPO = Path(__file__).resolve().parents[2]


def with_media(media: dict[str, Any], tmp_path: Path) -> Any:
    raw = minimal()
    raw["media"] = media
    return parse_config(raw, base_dir=tmp_path, persist_secrets=False)


def problems(media: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        with_media(media, tmp_path)
    return dict(info.value.problems)


class TestMediaSection:
    def test_without_a_section_media_is_local_https_only_and_twilio_sized(
            self, tmp_path: Path) -> None:
        config = parse_config(minimal(), base_dir=tmp_path, persist_secrets=False)
        media = config.media
        assert (media.max_item_bytes, media.max_message_bytes, media.max_items) == (
            5_000_000, 5_000_000, 10)
        assert media.allow_insecure_urls is False
        assert media.storage.backend == "local"
        assert media.storage.local.dir == tmp_path / "data" / "media"
        limits = media_limits(media)
        assert limits.allows("image/jpeg") and limits.allows("Image/PNG; charset=x")
        assert not limits.allows("text/html")

    def test_wildcards_allow_a_whole_type(self, tmp_path: Path) -> None:
        limits = media_limits(with_media({"content_types": ["image/*", "application/pdf"]},
                                         tmp_path).media)
        assert limits.allows("image/heic") and limits.allows("application/pdf")
        assert not limits.allows("imagex/png") and not limits.allows("video/mp4")

    def test_s3_needs_its_section_and_both_credentials_or_neither(self, tmp_path: Path) -> None:
        assert "media.storage" in problems({"storage": {"backend": "s3"}}, tmp_path)
        found = problems({"storage": {"backend": "s3", "s3": {
            "bucket": "gateway-media", "access_key_id": "AKIA0000"}}}, tmp_path)
        assert "together" in found["media.storage.s3"]
        config = with_media({"storage": {"backend": "s3", "s3": {
            "bucket": "gateway-media", "endpoint_url": "http://127.0.0.1:9000",
            "access_key_id": "AKIA0000", "secret_access_key": "s3cr3t-value-1234"}}},
            tmp_path)
        assert "s3cr3t-value-1234" in config.secret_values()
        assert "s3cr3t-value-1234" not in repr(config)

    @pytest.mark.parametrize(("media", "key"), [
        ({"max_message_bytes": 10, "max_item_bytes": 20}, "media"),
        ({"max_items": 11}, "media.max_items"),
        ({"content_types": ["jpeg"]}, "media.content_types"),
        ({"storage": {"backend": "ftp"}}, "media.storage.backend"),
        ({"storage": {"url_ttl_seconds": 30 * 86400}}, "media.storage.url_ttl_seconds"),
        ({"storage": {"backend": "s3", "s3": {"bucket": "Not_A_Bucket"}}},
         "media.storage.s3.bucket"),
        ({"allow_insecure_url": True}, "media.allow_insecure_url"),
        ({"inline_max_bytes": 2_000_000}, "media.inline_max_bytes"),
        ({"phone_url_ttl_seconds": 10}, "media.phone_url_ttl_seconds"),
    ])
    def test_wrong_values_name_their_key(self, tmp_path: Path, media: dict[str, Any],
                                         key: str) -> None:
        assert key in problems(media, tmp_path)


class TestShippedConfigs:
    def test_the_embedded_default_fetches_local_urls_and_check_config_says_so(
            self, tmp_path: Path) -> None:
        env = {"GATEWAY_DATA_DIR": str(tmp_path)}
        config = load_config(REPO / "config" / "gateway.yaml", persist_secrets=False, env=env)
        assert config.media.allow_insecure_urls is True
        example = load_config(REPO / "config" / "gateway.example.yaml", persist_secrets=False,
                              env=env)
        assert example.media.allow_insecure_urls is False
        assert example.media.storage.s3 is not None

    def test_check_config_notes_insecure_urls(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["data_dir"] = str(tmp_path / "data")
        raw["media"] = {"allow_insecure_urls": True}
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(raw))
        out = io.StringIO()
        assert check(path, out) == 0
        assert "media.allow_insecure_urls is on" in out.getvalue()


class TestCarrying:
    def test_the_carrier_follows_the_section(self, tmp_path: Path) -> None:
        from datetime import timedelta

        from gateway.media.wiring import carry_settings
        config = with_media({"inline_max_bytes": 1000, "phone_url_ttl_seconds": 600,
                             "storage": {"url_ttl_seconds": 86400}}, tmp_path)
        settings = carry_settings(config, "http://127.0.0.1:8788")
        assert settings.inline_max_bytes == 1000
        assert settings.phone_url_ttl == timedelta(minutes=10)
        assert settings.link_ttl == settings.group_url_ttl == timedelta(days=1)
        assert settings.phone_credentials is not None
        assert "http://127.0.0.1:8788" in settings.phone_credentials.scopes

    def test_a_rule_may_send_files_to_sms_phones_as_links_only(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["rules"][0]["outbound"] = {"sms_only": True}
        config = parse_config(raw, base_dir=tmp_path, persist_secrets=False)
        support, dial = config.rulebook().rules
        assert (support.outbound.sms_only, dial.outbound.sms_only) == (True, False)
        assert parse_config(minimal(), base_dir=tmp_path, persist_secrets=False
                            ).rulebook().rules[0].outbound.sms_only is False

    def test_check_config_shows_the_media_settings_and_sms_only_rules(
            self, tmp_path: Path) -> None:
        raw = minimal()
        raw["data_dir"] = str(tmp_path / "data")
        raw["rules"][0]["outbound"] = {"sms_only": True}
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(raw))
        out = io.StringIO()
        assert check(path, out) == 0
        text = out.getvalue()
        assert "sms-only" in text
        assert ("inline into groups up to 65536 bytes; MediaUrl links 3600s, other links "
                "604800s; kept 30 days") in text
