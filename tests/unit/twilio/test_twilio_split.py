import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.delivery.pacing import TokenBucket
from gateway.twilio.split import split_body, utf16_len


class TestSplittingLongBodies:
    def test_a_text_that_fits_is_one_part_unchanged(self) -> None:
        assert split_body("  hello  ") == ["  hello  "]
        assert split_body("x" * 1600) == ["x" * 1600]
        assert split_body("") == [""]

    def test_1601_characters_become_two_parts_cut_at_a_space(self) -> None:
        text = "a" * 1000 + " " + "b" * 600  # 1,601 characters
        assert split_body(text) == ["a" * 1000, "b" * 600]

    def test_a_word_longer_than_a_message_is_cut_where_it_must(self) -> None:
        assert split_body("x" * 3300) == ["x" * 1600, "x" * 1600, "x" * 100]

    def test_newlines_are_cut_points_too(self) -> None:
        text = "a" * 1500 + "\n" + "b" * 200
        assert split_body(text) == ["a" * 1500, "b" * 200]

    def test_long_blank_text_leaves_nothing(self) -> None:
        assert split_body(" " * 2000) == [""]

    def test_emoji_count_as_two_units(self) -> None:
        text = "\U0001f600" * 801  # 1,602 UTF-16 units in 801 characters
        parts = split_body(text)
        assert [utf16_len(p) for p in parts] == [1600, 2]

    @given(st.text(alphabet=st.sampled_from(["a", "b", " ", "\n", "é", "\U0001f600"]),
                   max_size=5000),
           st.integers(min_value=2, max_value=300))
    def test_parts_fit_and_keep_every_word_in_order(self, text: str, limit: int) -> None:
        parts = split_body(text, limit)
        assert all(utf16_len(p) <= limit for p in parts)
        if utf16_len(text) > limit and text.strip():
            assert all(p.strip() for p in parts)
        assert "".join(" ".join(parts).split()) == "".join(text.split())


class TestTokenBucket:
    def test_the_first_send_goes_at_once_and_the_next_waits_a_period(self) -> None:
        now = [100.0]
        bucket = TokenBucket(2.0, now=lambda: now[0])
        assert bucket.reserve() == 0
        assert bucket.reserve() == pytest.approx(0.5)
        assert bucket.reserve() == pytest.approx(1.0)

    def test_tokens_come_back_with_time_up_to_the_burst(self) -> None:
        now = [0.0]
        bucket = TokenBucket(1.0, burst=2, now=lambda: now[0])
        assert [bucket.reserve(), bucket.reserve()] == [0, 0]
        now[0] = 10.0
        assert [bucket.reserve(), bucket.reserve()] == [0, 0]
        assert bucket.reserve() == pytest.approx(1.0)

    def test_a_pause_holds_every_send(self) -> None:
        now = [0.0]
        bucket = TokenBucket(10.0, now=lambda: now[0])
        bucket.pause(5)
        assert bucket.reserve() == pytest.approx(5)

    def test_a_cancelled_reservation_gives_its_token_back(self) -> None:
        now = [0.0]
        bucket = TokenBucket(1.0, now=lambda: now[0])
        bucket.reserve()
        bucket.cancel()
        assert bucket.reserve() == 0
