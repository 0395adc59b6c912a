import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.keywords import HELP_WORDS, START_WORDS, STOP_WORDS, Keyword, classify

FAMILIES = [(word, Keyword.STOP) for word in sorted(STOP_WORDS)] + [
    (word, Keyword.START) for word in sorted(START_WORDS)] + [
    (word, Keyword.HELP) for word in sorted(HELP_WORDS)]


class TestTwilioDefaultKeywords:
    # Twilio's documented defaults for long codes (Advanced Opt-Out tutorial).
    @pytest.mark.parametrize(("words", "keyword"), [
        ("STOP STOPALL UNSUBSCRIBE CANCEL END QUIT REVOKE OPTOUT", Keyword.STOP),
        ("START YES UNSTOP", Keyword.START),
        ("HELP INFO", Keyword.HELP),
    ])
    def test_the_families_are_twilios(self, words: str, keyword: Keyword) -> None:
        family = {Keyword.STOP: STOP_WORDS, Keyword.START: START_WORDS,
                  Keyword.HELP: HELP_WORDS}[keyword]
        assert set(words.split()) == set(family)

    @pytest.mark.parametrize(("word", "keyword"), FAMILIES)
    def test_each_word_is_its_family(self, word: str, keyword: Keyword) -> None:
        assert classify(word) is keyword

    @given(st.sampled_from(FAMILIES), st.data())
    def test_case_and_surrounding_space_do_not_matter(self, family: tuple[str, Keyword],
                                                       data: st.DataObject) -> None:
        word, keyword = family
        cased = "".join(data.draw(st.sampled_from([c.lower(), c.upper()])) for c in word)
        pad = data.draw(st.sampled_from(["", " ", "\n", "\t ", "  \r\n"]))
        assert classify(pad + cased + pad) is keyword

    @pytest.mark.parametrize("body", ["Stop.", "STOP!", " stop ! "])
    def test_trailing_punctuation_still_stops(self, body: str) -> None:
        assert classify(body) is Keyword.STOP


class TestOrdinaryMessages:
    @pytest.mark.parametrize("body", [
        "stop texting me", "please stop", "STOP ALL", "helpme", "yes please", "", None,
        "S T O P", "information",
    ])
    def test_a_keyword_must_be_the_whole_message(self, body: str | None) -> None:
        assert classify(body) is None

    @given(st.sampled_from(FAMILIES),
           st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=15))
    def test_a_keyword_followed_by_more_words_is_ordinary(
            self, family: tuple[str, Keyword], more: str) -> None:
        assert classify(f"{family[0]} {more}") is None
        assert classify(f"{more} {family[0]}") is None
