"""Page tokens and the pages made from a query's slice."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.api.errors import InvalidPageToken, InvalidParameter
from gateway.api.pagination import (
    decode_token,
    encode_token,
    make_page,
    page_size,
    token_time,
    window_from_token,
)
from gateway.domain.ports import Slice, Window


class TestPageTokens:
    @given(st.integers(min_value=0), st.booleans(), st.sampled_from([None, "active"]))
    def test_a_token_round_trips_its_key_direction_and_filters(self, key, forward, state):
        payload = {"k": key, "f": forward, "state": state}
        assert decode_token(encode_token(payload)) == payload

    def test_tokens_are_url_safe(self):
        token = encode_token({"k": ["2026-01-01T00:00:00+00:00", "CH" + "f" * 32], "f": True})
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                 "0123456789-_")

    @pytest.mark.parametrize("token", ["", "!!!", "bm90IGpzb24", "W10", "eyJmIjoxfQ"])
    def test_anything_else_is_refused(self, token):
        with pytest.raises(InvalidPageToken):
            decode_token(token)

    @pytest.mark.parametrize("key,shape", [
        (["x", "CH1"], "time_id"), ([1, 2], "time_id"), ("5", "index"), (-1, "index"),
        (True, "index"), (5, "time_id"), (["2026-01-01T00:00:00", "CH1"], "time_id")])
    def test_a_key_of_the_wrong_shape_is_refused(self, key, shape):
        with pytest.raises(InvalidPageToken):
            window_from_token({"k": key, "f": True}, 10, key=shape)

    def test_times_in_tokens_must_carry_a_zone(self):
        assert token_time({"since": "2026-01-01T00:00:00+00:00"}, "since") is not None
        with pytest.raises(InvalidPageToken):
            token_time({"since": "2026-01-01T00:00:00"}, "since")


class TestPageSize:
    def test_defaults_and_bounds(self):
        assert page_size(None) == 50
        assert page_size("100") == 100
        for raw in ("0", "101", "ten"):
            with pytest.raises(InvalidParameter):
                page_size(raw)


def key(n: int) -> int:
    return n


class TestMakingPages:
    def test_a_first_page_with_more_points_forward_only(self):
        page = make_page(Slice([1, 2], more=True, behind=False), Window(None, limit=2),
                         key_of=key, filters={})
        assert page.has_next and not page.has_prev and page.prev_page_token is None
        assert decode_token(page.next_page_token or "") == {"k": 2, "f": True}

    def test_a_backward_page_swaps_the_meaning_of_more_and_behind(self):
        page = make_page(Slice([3, 4], more=True, behind=True), Window(5, forward=False),
                         key_of=key, filters={"o": "asc"})
        assert page.has_prev and page.has_next
        assert decode_token(page.prev_page_token or "") == {"k": 3, "f": False, "o": "asc"}
        assert decode_token(page.next_page_token or "") == {"k": 4, "f": True, "o": "asc"}

    def test_an_empty_page_past_the_end_steps_back_including_its_start(self):
        page = make_page(Slice([], more=False, behind=True), Window(9), key_of=key,
                         filters={})
        assert not page.has_next and page.has_prev
        assert decode_token(page.prev_page_token or "") == {"k": 9, "f": False, "i": True}

    def test_an_empty_listing_has_no_tokens(self):
        page = make_page(Slice([], more=False, behind=False), Window(None), key_of=key,
                         filters={})
        assert (page.has_next, page.has_prev, page.next_page_token,
                page.prev_page_token) == (False, False, None, None)
