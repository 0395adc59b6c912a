"""Rules written as YAML come back as the same domain rules."""

import tempfile
from pathlib import Path
from typing import Any

import yaml
from eth_utils.address import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import parse_config
from gateway.config.sources import find_placeholders
from gateway.domain.ids import PhoneNumber, WalletAddress
from gateway.domain.models import Channel
from gateway.domain.policy import OutboundPolicy, WhatsAppTemplate
from gateway.domain.rules import Rule, RuleMode, Screen
from tests.unit.config_fixtures import minimal

wallets = st.binary(min_size=20, max_size=20).map(to_checksum_address)
screens = st.fixed_dictionaries({
    "prefixes": st.lists(st.from_regex(r"\+[1-9][0-9]{0,4}", fullmatch=True), max_size=3),
    "countries": st.lists(st.sampled_from(["US", "CA", "GB", "DE", "FR", "BR", "IN"]),
                          max_size=3, unique=True),
})
texts = st.none() | st.text(
    alphabet=st.characters(categories=["L", "N", "P", "Zs"], exclude_characters="$"),
    min_size=1, max_size=40).filter(lambda t: not find_placeholders({"text": t}))
outbound = st.fixed_dictionaries({
    "allow_unsolicited": st.booleans(),
    "per_phone_daily": st.none() | st.integers(1, 1000),
    "per_rule_daily": st.none() | st.integers(1, 100000),
    "whatsapp_template": st.none() | st.fixed_dictionaries({
        "content_sid": st.from_regex(r"HX[0-9a-f]{32}", fullmatch=True),
        "variables": st.dictionaries(st.sampled_from(["1", "2", "3"]),
                                     # PyYAML's emitter folds a line break such as NEL
                                     # (U+0085) inside a scalar into a space, so the
                                     # YAML round trip itself would change such text.
                                     st.text(alphabet=st.characters(
                                         categories=["L", "N", "P", "S", "Zs"],
                                         exclude_characters="$"),
                                         min_size=1, max_size=10).filter(
                                         lambda t: t.strip() == t), max_size=2),
    }),
})


@st.composite
def rule_lists(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 4))
    names = draw(st.lists(st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True),
                          min_size=count, max_size=count, unique=True))
    rules = []
    for index, name in enumerate(names):
        mode = draw(st.sampled_from(["fixed", "dial"]))
        rules.append({
            "name": name,
            "proxy": f"+1555010{index:04d}",  # distinct, so no route is claimed twice
            "channels": draw(st.lists(st.sampled_from(["sms", "whatsapp"]), min_size=1,
                                      max_size=2, unique=True)),
            "mode": mode,
            "wallets": draw(st.lists(wallets, min_size=1, max_size=3, unique=True))
            if mode == "fixed" else [],
            "allow": draw(screens), "deny": draw(screens),
            "greeting": draw(texts), "help": draw(texts),
            "sender_label": draw(st.sampled_from(["{label}: ", "", "[{rule}] {short} "])),
            "outbound": draw(outbound),
        })
    return rules


def expected_rule(raw: dict[str, Any]) -> Rule:
    template = raw["outbound"]["whatsapp_template"]
    return Rule(
        name=raw["name"], proxy=PhoneNumber(raw["proxy"]),
        channels=frozenset(Channel(c) for c in raw["channels"]), mode=RuleMode(raw["mode"]),
        wallets=tuple(WalletAddress(w) for w in raw["wallets"]),
        allow=Screen(tuple(raw["allow"]["prefixes"]), frozenset(raw["allow"]["countries"])),
        deny=Screen(tuple(raw["deny"]["prefixes"]), frozenset(raw["deny"]["countries"])),
        greeting=raw["greeting"], help_text=raw["help"], sender_label=raw["sender_label"],
        outbound=OutboundPolicy(
            allow_unsolicited=raw["outbound"]["allow_unsolicited"],
            per_phone_daily=raw["outbound"]["per_phone_daily"],
            per_rule_daily=raw["outbound"]["per_rule_daily"],
            whatsapp_template=WhatsAppTemplate(template["content_sid"], template["variables"])
            if template else None),
    )


class TestRulesRoundTrip:
    @settings(max_examples=60, deadline=None)
    @given(rule_lists(), st.booleans())
    def test_yaml_rules_become_the_same_domain_rules(self, rules: list[dict[str, Any]],
                                                     lowercase: bool) -> None:
        raw = minimal()
        raw["rules"] = [
            {**rule, "wallets": [w.lower() for w in rule["wallets"]]} if lowercase else rule
            for rule in rules]
        with tempfile.TemporaryDirectory() as tmp:
            reread = yaml.safe_load(yaml.safe_dump(raw, allow_unicode=True))
            book = parse_config(reread, base_dir=Path(tmp), env={}).rulebook()
        assert book.rules == tuple(expected_rule(rule) for rule in rules)
        for rule in rules:
            for channel in rule["channels"]:
                found = book.match(rule["proxy"], Channel(channel))
                assert found is not None and found.name == rule["name"]
