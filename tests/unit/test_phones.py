import re

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.phones import country_of, mask, mask_text, parse_e164, parse_phone
from gateway.errors import BadRequest

# Numbers phonenumbers can produce for real regions: the generator behind the properties.
REGIONS = sorted(["US", "GB", "DE", "FR", "IN", "BR", "JP", "NG", "AU", "CA", "MX", "ZA"])


@st.composite
def real_numbers(draw: st.DrawFn) -> str:
    region = draw(st.sampled_from(REGIONS))
    kind = draw(st.sampled_from([phonenumbers.PhoneNumberType.MOBILE,
                                 phonenumbers.PhoneNumberType.FIXED_LINE]))
    example = phonenumbers.example_number_for_type(region, kind)
    assert example is not None
    return phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)


class TestParsePhone:
    def test_spaces_dashes_and_brackets_are_tolerated(self) -> None:
        assert parse_phone(" +1 (555) 010-0123 ") == "+15550100123"

    def test_the_fictional_555_01xx_range_is_accepted(self) -> None:
        assert parse_phone("+15550100001") == "+15550100001"

    @pytest.mark.parametrize(("raw", "reason"), [
        ("", "empty"),
        ("15550100123", "no leading '+'"),
        ("+1555", "too short"),
        ("+1555abc0123", "unexpected characters"),
        ("++15550100123", "unexpected characters"),
        ("+15550100123456789", "too long"),
        ("+999123456789", "not an E.164 number"),
    ])
    def test_malformed_numbers_are_refused_with_a_reason(self, raw: str, reason: str) -> None:
        with pytest.raises(BadRequest, match=re.escape(reason)):
            parse_phone(raw)

    def test_a_refusal_never_repeats_the_number(self) -> None:
        with pytest.raises(BadRequest) as refused:
            parse_phone("15550100123")
        assert "0100123" not in str(refused.value)

    @given(real_numbers())
    def test_e164_numbers_parse_to_themselves(self, number: str) -> None:
        assert parse_phone(number) == number

    @given(real_numbers(), st.sampled_from([" ", "-", "."]))
    def test_separators_do_not_change_the_number(self, number: str, sep: str) -> None:
        spaced = number[:3] + sep + number[3:6] + sep + number[6:]
        assert parse_phone(spaced) == number

    @given(st.text(max_size=30))
    def test_any_text_either_parses_to_e164_or_is_refused(self, raw: str) -> None:
        try:
            parsed = parse_phone(raw)
        except BadRequest:
            return
        assert parsed.startswith("+") and parsed[1:].isdigit()
        assert parse_phone(parsed) == parsed


class TestParseE164:
    @given(real_numbers())
    def test_every_real_number_in_e164_is_taken_as_written(self, number: str) -> None:
        assert parse_e164(number) == number

    @pytest.mark.parametrize("raw", ["+1 555 010 0123", "+15550100123\n", " +15550100123",
                                     "+1555010012\uff13",  # a fullwidth 3
                                     "+1555\u0660\u0661\u0660\u0660\u0661\u0662\u0663",  # Arabic
                                     "15550100123",
                                     "+05550100123", "+123456", "+1234567890123456"])
    def test_anything_people_type_around_it_is_refused(self, raw: str) -> None:
        with pytest.raises(BadRequest, match="nothing else"):
            parse_e164(raw)

    def test_exact_but_impossible_for_its_country_is_refused(self) -> None:
        with pytest.raises(BadRequest, match=r"not an E.164 number \(too short\)"):
            parse_e164("+1415555")


class TestCountryOf:
    def test_regions_of_allocated_numbers(self) -> None:
        assert country_of("+12125551234") == "US"
        assert country_of("+442079460000") == "GB"

    def test_unallocated_numbers_fall_back_to_the_main_region(self) -> None:
        assert country_of("+15550100123") == "US"

    def test_non_geographic_numbers_have_no_country(self) -> None:
        assert country_of("+80012345678") is None

    def test_garbage_has_no_country(self) -> None:
        assert country_of("nonsense") is None


class TestMask:
    def test_keeps_country_code_and_last_four_digits(self) -> None:
        assert mask("+15550100123") == "+1******0123"
        assert mask("+447911123456") == "+44******3456"

    def test_text_keeps_its_prefixes(self) -> None:
        text = "from whatsapp:+15550100123 body=From=%2B447911123456&x=1"
        assert mask_text(text) == "from whatsapp:+1******0123 body=From=%2B44******3456&x=1"

    def test_short_numbers_and_plain_digits_are_left_alone(self) -> None:
        assert mask_text("order 1234567890 costs +5") == "order 1234567890 costs +5"

    @given(real_numbers(), st.text(max_size=10), st.text(max_size=10))
    def test_no_number_survives_masking(self, number: str, before: str, after: str) -> None:
        masked = mask_text(f"{before} {number} {after}")
        assert number not in masked
        assert mask(number) in masked

    @given(real_numbers())
    def test_the_mask_has_the_numbers_length(self, number: str) -> None:
        assert len(mask(number)) == len(number)
        assert mask(number)[-4:] == number[-4:]
