"""The interactive demo's ``to``: only a number some rule serves, by name or number."""

from __future__ import annotations

from pathlib import Path

from gateway.config import parse_config
from gateway.demo import ServedNumbers
from tests.unit.config_fixtures import minimal

NUMBERS = ServedNumbers({"support": "+15550100001", "dial": "+15550100002"})


class TestServedNumbers:
    def test_a_rule_name_names_its_number_in_any_case(self) -> None:
        assert NUMBERS.named("dial") == "+15550100002"
        assert NUMBERS.named(" Support ") == "+15550100001"

    def test_a_served_number_names_itself_with_or_without_spaces_and_dashes(self) -> None:
        assert NUMBERS.named("+15550100002") == "+15550100002"
        assert NUMBERS.named("+1 555-010-0001") == "+15550100001"

    def test_anything_else_names_nothing(self) -> None:
        for choice in ("nowhere", "+15550100009", "15550100001", "sup"):
            assert NUMBERS.named(choice) is None, choice

    def test_the_choices_read_as_names_and_numbers_in_the_rules_order(self) -> None:
        assert str(NUMBERS) == "support +15550100001, dial +15550100002"
        assert NUMBERS.first == "+15550100001"

    def test_they_are_the_configured_rules_numbers(self, tmp_path: Path) -> None:
        config = parse_config(minimal(), base_dir=tmp_path)
        numbers = ServedNumbers.of(config.rulebook().rules)
        assert dict(numbers.by_rule) == {"support": "+15550100001", "dial": "+15550100002"}
