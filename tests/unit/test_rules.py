import pytest

from gateway.domain.ids import PhoneNumber, WalletAddress
from gateway.domain.models import Channel
from gateway.domain.rules import Rule, RuleBook, RuleMode, Screen, render_label, short_address

ALICE = WalletAddress("0xAb5801a7D398351b8bE11C439e05C5B3259aeC9B")
BOB = WalletAddress("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
SUPPORT = PhoneNumber("+15550100001")
DIAL = PhoneNumber("+15550100002")


def rule(name: str = "support", proxy: PhoneNumber = SUPPORT, **kw: object) -> Rule:
    fields: dict[str, object] = {
        "channels": frozenset({Channel.SMS}), "mode": RuleMode.FIXED, "wallets": (ALICE,)}
    fields.update(kw)
    return Rule(name=name, proxy=proxy, **fields)  # type: ignore[arg-type]


class TestMatch:
    def test_a_rule_matches_its_proxy_on_its_channels_only(self) -> None:
        support = rule(channels=frozenset({Channel.SMS, Channel.WHATSAPP}))
        book = RuleBook([support], {})
        assert book.match(SUPPORT, Channel.SMS) is support
        assert book.match(SUPPORT, Channel.WHATSAPP) is support
        assert book.match(DIAL, Channel.SMS) is None

    def test_the_same_number_may_serve_two_rules_on_different_channels(self) -> None:
        sms = rule("sms-line")
        whatsapp = rule("wa-line", channels=frozenset({Channel.WHATSAPP}), wallets=(BOB,))
        book = RuleBook([sms, whatsapp], {})
        assert book.match(SUPPORT, Channel.SMS) is sms
        assert book.match(SUPPORT, Channel.WHATSAPP) is whatsapp
        assert book.proxies() == [SUPPORT]
        assert book.proxies(Channel.XMTP) == []

    def test_rules_are_found_by_name(self) -> None:
        support = rule()
        book = RuleBook([support], {})
        assert book.get("support") is support
        assert book.get("gone") is None


class TestScreen:
    def test_an_empty_allow_list_admits_everyone(self) -> None:
        book = RuleBook([rule()], {})
        assert book.screen(book.rules[0], "+447911123456") is None

    def test_allow_by_prefix_or_country(self) -> None:
        book = RuleBook([rule(allow=Screen(prefixes=("+44",), countries=frozenset({"CA"})))],
                        {})
        line = book.rules[0]
        assert book.screen(line, "+447911123456") is None
        assert book.screen(line, "+16135550123") is None  # Ottawa
        refusal = book.screen(line, "+12125551234")  # New York
        assert refusal is not None and "support" in refusal

    def test_deny_wins_over_allow(self) -> None:
        book = RuleBook([rule(allow=Screen(countries=frozenset({"US"})),
                              deny=Screen(prefixes=("+1900",)))], {})
        line = book.rules[0]
        assert book.screen(line, "+12125551234") is None
        assert book.screen(line, "+19005550123") is not None

    def test_deny_by_country(self) -> None:
        book = RuleBook([rule(deny=Screen(countries=frozenset({"GB"})))], {})
        assert book.screen(book.rules[0], "+442079460000") is not None
        assert book.screen(book.rules[0], "+12125551234") is None


class TestSenderLabels:
    def test_an_aliased_wallet_is_labelled_by_its_alias(self) -> None:
        book = RuleBook([rule()], {"Alice": ALICE})
        assert book.sender_label(book.rules[0], ALICE) == "alice: "

    def test_a_wallet_without_alias_is_labelled_by_its_short_address(self) -> None:
        book = RuleBook([rule()], {})
        assert book.sender_label(book.rules[0], ALICE) == "0xAb58…eC9B: "
        assert short_address(ALICE) == "0xAb58…eC9B"

    def test_every_variable_is_filled(self) -> None:
        template = "[{rule}] {alias}|{short}|{address}|{label} "
        book = RuleBook([rule(sender_label=template)], {"alice": ALICE})
        assert book.sender_label(book.rules[0], ALICE) == (
            f"[support] alice|0xAb58…eC9B|{ALICE}|alice ")

    def test_an_empty_template_sends_bare_text(self) -> None:
        book = RuleBook([rule(sender_label="")], {})
        assert book.sender_label(book.rules[0], ALICE) == ""

    def test_unknown_variables_are_refused(self) -> None:
        with pytest.raises(ValueError, match="nickname"):
            render_label("{nickname}: ", label="x")

    def test_format_specs_are_refused(self) -> None:
        with pytest.raises(ValueError, match="format spec"):
            render_label("{label!r}", label="x")

    def test_the_first_alias_in_order_names_a_wallet_with_two(self) -> None:
        book = RuleBook([rule()], {"zed": ALICE, "alice": ALICE})
        assert book.alias_of(ALICE) == "alice"


class TestDialThroughTheBook:
    def test_the_book_dials_with_its_directory(self) -> None:
        book = RuleBook([rule("dial", DIAL, mode=RuleMode.DIAL, wallets=())], {"bob": BOB})
        dial = book.parse_dial("Bob: hi")
        assert dial is not None and dial.wallet == BOB and dial.rest == "hi"
