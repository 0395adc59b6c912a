"""Dial mode: the phone's text names the wallet in its first token."""

from eth_utils.address import to_checksum_address
from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.domain.ids import WalletAddress
from gateway.domain.rules import ALIAS_PATTERN, Dial, normalize_address, parse_dial

ALICE = WalletAddress("0xAb5801a7D398351b8bE11C439e05C5B3259aeC9B")
DIRECTORY = {"alice": ALICE, "support.team": WalletAddress(
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")}

addresses = st.binary(min_size=20, max_size=20).map(
    lambda raw: WalletAddress(to_checksum_address(raw)))
separators = st.sampled_from([" ", "  ", ": ", ":", ", ", ",", " : ", "\n", "\t"])
rests = st.text(max_size=40).filter(lambda text: not text[:1].isspace() and
                                    text[:1] not in (":", ","))
spellings = st.sampled_from([str.lower, str.upper, lambda a: a])


class TestDialByAddress:
    def test_a_lowercase_address_is_checksummed(self) -> None:
        assert parse_dial(ALICE.lower() + " hello there", {}) == Dial(ALICE, "hello there")

    def test_the_address_alone_dials_with_an_empty_rest(self) -> None:
        assert parse_dial(ALICE, {}) == Dial(ALICE, "")

    def test_a_wrong_checksum_in_mixed_case_is_not_a_dial(self) -> None:
        typo = ALICE[:-1] + ALICE[-1].lower()  # ...aeC9B -> ...aeC9b
        assert parse_dial(typo + " hi", {}) is None

    def test_short_or_long_hex_is_not_an_address(self) -> None:
        assert parse_dial(ALICE[:-1] + " hi", {}) is None
        assert parse_dial(ALICE + "0 hi", {}) is None

    @given(addresses, spellings, st.booleans(), separators, rests)
    def test_any_address_dials_and_keeps_the_rest(self, wallet: WalletAddress, spell: object,
                                                  at: bool, sep: str, rest: str) -> None:
        assert callable(spell)
        token = "0x" + spell(wallet[2:])
        dial = parse_dial(("@" if at else "") + token + sep + rest, {})
        assert dial == Dial(wallet, rest.strip())

    @given(addresses, st.data())
    def test_a_mixed_case_typo_is_never_a_dial(self, wallet: WalletAddress,
                                               data: st.DataObject) -> None:
        letters = [i for i, c in enumerate(wallet) if i >= 2 and c.isalpha()]
        assume(letters)
        i = data.draw(st.sampled_from(letters))
        typo = wallet[:i] + wallet[i].swapcase() + wallet[i + 1:]
        digits = typo[2:]
        assume(digits not in (digits.lower(), digits.upper()))
        assert normalize_address(typo) is None
        assert parse_dial(typo + " hi", {}) is None


class TestDialByAlias:
    def test_an_alias_with_colon(self) -> None:
        assert parse_dial("alice: hello", DIRECTORY) == Dial(ALICE, "hello", alias="alice")

    def test_aliases_ignore_case_and_take_an_at_sign(self) -> None:
        assert parse_dial("@ALICE, hi", DIRECTORY) == Dial(ALICE, "hi", alias="alice")

    def test_aliases_may_contain_dots(self) -> None:
        dial = parse_dial("support.team help me", DIRECTORY)
        assert dial is not None and dial.alias == "support.team"

    def test_an_unknown_word_is_not_a_dial(self) -> None:
        assert parse_dial("hello alice", DIRECTORY) is None
        assert parse_dial("bob: hi", DIRECTORY) is None

    def test_the_rest_keeps_inner_lines(self) -> None:
        dial = parse_dial("alice:  line one\nline two  ", DIRECTORY)
        assert dial is not None and dial.rest == "line one\nline two"

    @given(st.sampled_from(sorted(DIRECTORY)), separators, rests)
    def test_any_alias_dials_and_keeps_the_rest(self, alias: str, sep: str,
                                                rest: str) -> None:
        assert parse_dial(alias + sep + rest, DIRECTORY) == Dial(
            DIRECTORY[alias], rest.strip(), alias=alias)

    @given(st.text(max_size=40))
    def test_text_naming_no_known_target_is_never_a_dial(self, text: str) -> None:
        first = text.strip().split(maxsplit=1)[0] if text.strip() else ""
        token = first.lstrip("@").split(":")[0].split(",")[0].lower()
        assume(token not in DIRECTORY and not token.startswith("0x"))
        assert parse_dial(text, DIRECTORY) is None

    @given(st.from_regex(ALIAS_PATTERN, fullmatch=True), rests)
    def test_a_dial_names_an_address_or_a_directory_alias(self, word: str,
                                                          rest: str) -> None:
        dial = parse_dial(f"{word} {rest}", DIRECTORY)
        if word in DIRECTORY:
            assert dial is not None and dial.wallet == DIRECTORY[word]
        else:
            assert dial is None
