"""guard's phone recognizer parses numbers written with digits and separators its own
way (``_parse_national``) and asks the country's main region first (``_is_valid``):
both must give libphonenumber's own answer, in every region it knows, for numbers
written the ways people write them and for digit runs that are no number at all."""

import random

import phonenumbers
import pytest
from phonenumbers import PhoneNumberType, phonenumberutil

from guard.detectors.pii import recognizers
from guard.detectors.pii.recognizers import (
    _is_valid,
    _number_types,
    _parse,
    _parse_national,
    _prefix_if_required,
    _valid_in,
)

REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
SEPARATORS = ["", " ", "-", ".", "/", " - ", "(", ")", ") "]


def _fields(number: phonenumbers.PhoneNumber | None) -> tuple[object, ...] | None:
    if number is None:
        return None
    return (
        number.country_code,
        number.national_number,
        number.italian_leading_zero,
        number.number_of_leading_zeros,
        number.country_code_source,
    )


def _written(rng: random.Random, digits: str) -> str:
    """``digits`` with separators between some of them, as the recognizer's candidates
    are written."""
    out = []
    for i, digit in enumerate(digits):
        if i and rng.random() < 0.3:
            out.append(rng.choice(SEPARATORS))
        out.append(digit)
    return "".join(out)


def _numbers(region: str, rng: random.Random) -> list[str]:
    """Example numbers of every type in national, international-without-plus and IDD
    form, each also mutated (a digit changed, one added or one dropped), and random digit
    runs of 2 to 17 digits."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    code = str(phonenumbers.country_code_for_region(region))
    idd = (metadata.preferred_international_prefix or "00") if metadata else "00"
    found: list[str] = []
    for kind in (
        PhoneNumberType.FIXED_LINE,
        PhoneNumberType.MOBILE,
        PhoneNumberType.TOLL_FREE,
        PhoneNumberType.VOIP,
    ):
        example = phonenumbers.example_number_for_type(region, kind)
        if example is None:
            continue
        national = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL)
        nsn = phonenumbers.national_significant_number(example)
        for form in (national, code + nsn, idd + code + nsn, "00" + code + nsn, nsn):
            digits = "".join(c for c in form if c.isdigit())
            at = rng.randrange(len(digits))
            mutated = rng.choice(
                [
                    digits[:at] + str((int(digits[at]) + 1) % 10) + digits[at + 1 :],
                    digits + str(rng.randrange(10)),
                    digits[:-1],
                ]
            )
            found += [form, _written(rng, digits), mutated]
    found += ["".join(rng.choices("0123456789", k=rng.randint(2, 17))) for _ in range(8)]
    return [n for n in found if recognizers._NATIONAL.fullmatch(n)]


@pytest.mark.parametrize("chunk", range(4))
def test_parse_national_is_libphonenumbers_parse_in_every_region(chunk: int) -> None:
    rng = random.Random(chunk)  # noqa: S311  # reproducible numbers, not secrets
    compared = 0
    for region in REGIONS[chunk::4]:
        for number in _numbers(region, rng):
            digits = "".join(c for c in number if c.isdigit())
            ours = _parse_national(digits, region)
            theirs = _parse(number, region)
            assert _fields(ours) == _fields(theirs), (region, number)
            if theirs is not None:
                assert _is_valid(ours) == phonenumbers.is_valid_number(theirs), (region, number)  # type: ignore[arg-type]
                assert _prefix_if_required(ours) == _prefix_if_required(theirs), (region, number)  # type: ignore[arg-type]
                _assert_same_type_check(theirs)
            compared += 1
    assert compared > 1000


def _assert_same_type_check(number: phonenumbers.PhoneNumber) -> None:
    """The one-pattern-per-length check answers as libphonenumber's own type check, in
    the number's main region, whenever guard uses it (so not only where is_valid_number
    would have said the same anyway)."""
    region = phonenumbers.region_code_for_country_code(number.country_code)
    types = _number_types(region)
    if types is None:
        return
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    nsn = phonenumbers.national_significant_number(number)
    expected = phonenumberutil._number_type_helper(nsn, metadata) != PhoneNumberType.UNKNOWN
    assert types(nsn) == expected, (region, nsn)


def test_the_type_check_answers_for_the_main_regions_and_leaves_the_others() -> None:
    assert _number_types("US")("2017660218")  # type: ignore[misc]
    assert not _number_types("US")("2011660218")  # type: ignore[misc]  # no exchange starts with 1
    assert _number_types("GB")("2079460958")  # type: ignore[misc]
    assert _number_types("KZ") is None  # shares +7 with RU, told apart by leading digits


def test_valid_in_answers_as_libphonenumber_for_the_default_regions() -> None:
    regions = ("US", "GB", "DE", "FR", "IL", "IN", "BR")
    rng = random.Random(5)  # noqa: S311
    numbers = [n for region in regions for n in _numbers(region, rng)]
    valid = 0
    for number in numbers:
        expected = False
        for region in regions:
            parsed = _parse(number, region)
            if parsed and phonenumbers.is_valid_number(parsed) and _prefix_if_required(parsed):
                expected = True
                break
        assert _valid_in.__wrapped__(number, regions) is expected, number
        valid += expected
    assert 50 < valid < len(numbers) - 50  # both answers are exercised


def test_numbers_with_a_plus_or_other_scripts_digits_go_through_libphonenumber() -> None:
    assert recognizers._NATIONAL.fullmatch("+1 415 555 2671") is None
    assert recognizers._NATIONAL.fullmatch("４１５５５５２６７１") is None  # noqa: RUF001
    assert _valid_in.__wrapped__("+44 20 7946 0958", (None,))
    assert _valid_in.__wrapped__("(415) 555-2671", ("US",))
    assert not _valid_in.__wrapped__("(415) 555-2671", ("DE",))
