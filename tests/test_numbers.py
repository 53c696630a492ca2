"""The E.164 quick check agrees with phonenumbers on every number it decides.

``server.domain.numbers.e164`` may only ever say yes where the full parse says
yes and prints the same number; everything else it leaves to the parse. These
tests hold it to that over every example number phonenumbers ships (each
region, each number type), over those numbers with a digit changed, added or
dropped, and over random digits under every calling code, and check that it
does decide the common case, so it is not a check that always passes.
"""

from __future__ import annotations

import random
import re
from typing import Any

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from server.domain import numbers
from server.domain.addresses import AddressError, normalize_msisdn

TYPES = [t for t in vars(PhoneNumberType).values() if isinstance(t, int) and t >= 0]


def full_parse(text: str) -> str | None:
    """What phonenumbers alone makes of text: the E.164 form, or None if refused."""
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number) or not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def _examples() -> list[str]:
    found = set()
    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in TYPES:
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                found.add(phonenumbers.format_number(example, PhoneNumberFormat.E164))
    return sorted(found)


EXAMPLES = _examples()


def _variants(number: str, rng: random.Random) -> list[str]:
    digits = number[1:]
    i = rng.randrange(1, len(digits))
    return [
        "+" + digits[:i] + str(rng.randrange(10)) + digits[i + 1 :],  # one digit changed
        "+" + digits[:i] + str(rng.randrange(10)) + digits[i:],  # one added
        "+" + digits[:i] + digits[i + 1 :],  # one dropped
        number + str(rng.randrange(10)),
        number[:-1],
    ]


def _agrees(text: str) -> bool:
    quick = numbers.e164(text)
    return quick is None or quick == full_parse(text) == text


def test_every_example_number_is_decided_as_phonenumbers_decides_it() -> None:
    assert len(EXAMPLES) > 900
    wrong = [n for n in EXAMPLES if not _agrees(n)]
    assert wrong == []
    # The quick check must carry the common case, not hand everything on.
    decided = [n for n in EXAMPLES if numbers.e164(n) is not None]
    assert len(decided) >= 0.9 * len([n for n in EXAMPLES if full_parse(n)])


def test_numbers_near_the_edges_of_each_pattern_are_decided_as_phonenumbers_decides_them() -> None:
    rng = random.Random(20261206)
    tried = [v for n in EXAMPLES for v in _variants(n, rng)]
    wrong = [v for v in tried if not _agrees(v)]
    assert wrong == []
    # Some of them are refused by phonenumbers, and the quick check never accepts those.
    refused = [v for v in tried if full_parse(v) is None]
    assert len(refused) > 1000
    assert all(numbers.e164(v) is None for v in refused)


def test_random_digits_under_every_calling_code_are_decided_as_phonenumbers_decides_them() -> None:
    rng = random.Random(7)
    codes = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    tried = [
        f"+{code}" + "".join(rng.choice("0123456789") for _ in range(rng.randrange(1, 16)))
        for code in codes
        for _ in range(40)
    ]
    wrong = [t for t in tried if not _agrees(t)]
    assert wrong == []


@pytest.mark.parametrize(
    "text",
    ["+44 7911 123456", "447911123456", "+4407911123456", "tel:+447911123456", "+٤٤٧٩١١١٢٣٤٥٦"],
)
def test_what_is_not_plain_e164_is_left_to_the_full_parse(text: str) -> None:
    assert numbers.e164(text) is None
    # A bare run of digits is read as international, as normalize_msisdn does.
    expected = full_parse(text if text[0] != "4" else "+" + text)
    try:
        got: str | None = normalize_msisdn(text)
    except AddressError:
        got = None
    assert got == expected


def _region(prefix: str = "", leading: str = "", general: str = r"\d+", kinds: str = r"\d+") -> Any:
    by_length = {n: (re.compile(general), re.compile(kinds)) for n in range(2, 18)}
    return numbers._Region(
        national_prefix=re.compile(prefix) if prefix else None,
        leading_digits=re.compile(leading) if leading else None,
        by_length=by_length,
    )


def _code(*regions: Any, possible: frozenset[int] = frozenset({10})) -> Any:
    return numbers._Code(possible, regions[0], regions if len(regions) > 1 else ())


def test_each_rule_of_the_quick_check_refuses_on_its_own() -> None:
    """The rules overlap on real metadata, so each is also shown alone here."""
    assert numbers._accepts(_code(_region()), "2015550123")
    # A national prefix phonenumbers would strip: its output could differ.
    assert not numbers._accepts(_code(_region(prefix="2")), "2015550123")
    # A length the calling code's main region never has.
    assert not numbers._accepts(_code(_region(), possible=frozenset({9})), "2015550123")
    # The general pattern, then the number types' patterns.
    assert not numbers._accepts(_code(_region(general=r"3\d+")), "2015550123")
    assert not numbers._accepts(_code(_region(kinds=r"3\d+")), "2015550123")
    # A shared calling code: the region whose leading digits match decides,
    # even if a later region would take the number.
    strict = _region(leading="20", kinds=r"3\d+")
    assert not numbers._accepts(_code(strict, _region()), "2015550123")
    assert numbers._accepts(_code(_region(leading="9"), _region()), "2015550123")
    assert not numbers._accepts(_code(_region(leading="9"), _region(kinds="9")), "2015550123")
