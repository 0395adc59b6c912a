"""The rolling-window budget that paces each XMTP client's writes (XMTP counts them over
a rolling five minutes): a clock moved by hand, no sleeping."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.delivery.pacing import Pacer, PacingSettings, WindowBudget, WindowSettings
from gateway.errors import ConfigError
from gateway.xmtp.budget import budget_settings, refusal_pause
from tests.unit.config_fixtures import minimal


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def in_any_window(times: list[float], window: float) -> int:
    """The most sends any window of ``window`` seconds holds."""
    return max(sum(1 for u in times if t - window < u <= t) for t in times)


class TestAWindowBudget:
    def test_a_burst_goes_at_once_while_the_window_has_room(self) -> None:
        clock = Clock()
        budget = WindowBudget(5, 30.0, now=clock)
        assert [budget.reserve() for _ in range(5)] == [0.0] * 5
        assert budget.used() == 5
        assert budget.delayed == 0

    def test_beyond_the_limit_a_send_waits_for_the_oldest_to_leave_the_window(self) -> None:
        clock = Clock()
        budget = WindowBudget(3, 30.0, now=clock)
        budget.reserve()
        clock.t += 10
        budget.reserve()
        budget.reserve()
        assert budget.reserve() == pytest.approx(20.0, abs=0.01)  # the first leaves at +30
        assert budget.reserve() == pytest.approx(30.0, abs=0.01)  # the second at +40
        assert budget.delayed == 2

    def test_no_window_ever_holds_more_than_the_limit(self) -> None:
        clock = Clock()
        budget = WindowBudget(7, 30.0, now=clock)
        sent = []
        for step in range(200):
            clock.t += (step % 5) * 0.7  # uneven arrivals, bursts and gaps
            sent.append(clock.t + budget.reserve())
        assert in_any_window(sorted(sent), 30.0) == 7
        assert sent == sorted(sent)  # first come, first served

    def test_a_cancelled_reservation_gives_its_place_back(self) -> None:
        clock = Clock()
        budget = WindowBudget(2, 30.0, now=clock)
        budget.reserve()
        budget.reserve()
        assert budget.reserve() == pytest.approx(30.0, abs=0.01)
        budget.cancel()
        clock.t += 30.5
        assert budget.reserve() == 0.0

    def test_a_pause_holds_sends_and_counts_them_when_they_go(self) -> None:
        clock = Clock()
        budget = WindowBudget(10, 30.0, now=clock)
        budget.pause(12.0)
        assert budget.paused_for() == pytest.approx(12.0, abs=0.01)
        assert budget.reserve() == pytest.approx(12.0, abs=0.01)
        assert budget.used() == 0  # not yet gone
        clock.t += 12.0
        assert budget.used() == 1

    def test_the_backlog_is_when_the_window_would_let_the_last_queued_one_go(self) -> None:
        clock = Clock()
        budget = WindowBudget(4, 30.0, now=clock)
        assert budget.backlog_seconds(4) == 0.0
        assert budget.backlog_seconds(5) == pytest.approx(30.0, abs=0.01)
        assert budget.backlog_seconds(9) == pytest.approx(60.0, abs=0.01)
        for _ in range(4):
            budget.reserve()
        assert budget.backlog_seconds(1) == pytest.approx(30.0, abs=0.01)
        assert budget.backlog_seconds(1000) == pytest.approx(1000 / budget.rate)

    def test_it_refuses_a_limit_or_window_that_makes_no_sense(self) -> None:
        with pytest.raises(ValueError, match="limit"):
            WindowBudget(0, 30.0)
        with pytest.raises(ValueError, match="window"):
            WindowBudget(3, 0.0)


class TestThePacersBudgets:
    def test_with_a_window_every_sender_gets_its_own_budget_less_the_headroom(self) -> None:
        pacer = Pacer(PacingSettings(window=WindowSettings(3000, 300.0, headroom=0.05)))
        first, second = pacer.bucket("xmtp:0xA"), pacer.bucket("xmtp:0xB")
        assert isinstance(first, WindowBudget) and isinstance(second, WindowBudget)
        assert first is not second and first is pacer.bucket("xmtp:0xA")
        assert first.limit == 2850 and first.window == 300.0
        assert set(pacer.windows()) == {"xmtp:0xA", "xmtp:0xB"}

    def test_without_a_window_numbers_keep_their_token_buckets(self) -> None:
        pacer = Pacer(PacingSettings(default=1.0))
        bucket = pacer.bucket("+15550100001")
        assert bucket is not None and not isinstance(bucket, WindowBudget)
        assert pacer.windows() == {}


class TestTheConfig:
    """``xmtp.write_budget``: XMTP's network's limit by default, the gateway's pace."""

    def test_the_default_is_the_networks_limit_less_five_percent(self, tmp_path: Path) -> None:
        xmtp = parse_config(minimal(), base_dir=tmp_path, env={}).xmtp
        window = budget_settings(xmtp).window
        assert window is not None
        assert (window.limit, window.window, window.usable) == (3000, 300.0, 2850)
        assert refusal_pause(xmtp) == 10.0

    def test_a_scaled_down_budget_and_what_is_refused(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["xmtp"]["write_budget"] = {"writes": 300, "window_seconds": 30, "headroom": 0.1}
        window = budget_settings(parse_config(raw, base_dir=tmp_path, env={}).xmtp).window
        assert window is not None and (window.usable, window.window) == (270, 30.0)
        for wrong in ({"writes": 0}, {"headroom": 1.0}, {"window_seconds": 0}):
            raw["xmtp"]["write_budget"] = wrong
            with pytest.raises(ConfigError) as refused:
                parse_config(raw, base_dir=tmp_path, env={})
            assert any("write_budget" in path for path in dict(refused.value.problems)), wrong
