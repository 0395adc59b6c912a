"""A healthy process never beats on a send's account: its heartbeat outlasts the longest
send of every engine, even with one beat missed."""

from datetime import timedelta
from pathlib import Path

import pytest

from gateway.app import chat_engine_settings, holder_alive_seconds, phone_engine_settings
from gateway.config import parse_config
from gateway.delivery import EngineSettings, Holder
from gateway.delivery.holder import HEARTBEAT_SECONDS
from gateway.domain.clock import ManualClock
from gateway.store.sql import open_store
from tests.delivery.world import KEYS
from tests.unit.config_fixtures import minimal


def engines(raw: dict[str, object], tmp_path: Path) -> list[EngineSettings]:
    config = parse_config(raw, base_dir=tmp_path, env={})
    return [phone_engine_settings(config), chat_engine_settings(config)]


@pytest.mark.parametrize("xmtp_timeout", [None, 30.0, 120.0])
async def test_a_beat_covers_every_send_until_the_next_but_one(
        tmp_path: Path, xmtp_timeout: float | None) -> None:
    raw = minimal()
    if xmtp_timeout is not None:
        raw["xmtp"] = {**raw["xmtp"], "send_timeout_seconds": xmtp_timeout}
    settings = engines(raw, tmp_path)
    store = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", keys=KEYS,
                             active_key="k1")
    try:
        clock = ManualClock()
        holder = Holder(store, clock, holder_id="HOtest",
                        alive_seconds=holder_alive_seconds(*settings))
        await holder.beat()
        clock.advance(timedelta(seconds=2 * HEARTBEAT_SECONDS - 0.5))  # one beat missed
        for engine in settings:
            assert not holder.lapsed(engine.send_timeout + engine.lease_margin)
        clock.advance(timedelta(seconds=1.0))  # two missed: sends wait for a fresh beat
        assert any(holder.lapsed(e.send_timeout + e.lease_margin) for e in settings)
    finally:
        await store.close()
