"""The one rule set for loosely typed values: what each rule takes, and what it refuses."""

from __future__ import annotations

import math
from typing import Any

import pytest

from server.domain.coerce import (
    BadValue,
    flag,
    integer,
    items,
    loose,
    mapping,
    number,
    one_of,
    seconds,
    text,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        (" YES ", True),
        ("on", True),
        ("1", True),
        (1, True),
        ("false", False),
        ("No", False),
        ("off", False),
        (0, False),
    ],
)
def test_flag_takes_bools_and_the_words(value: Any, expected: bool) -> None:
    assert flag(value) is expected


@pytest.mark.parametrize("value", ["maybe", "ture", "", 2, 1.0, None, [], {}])
def test_flag_refuses_anything_else(value: Any) -> None:
    with pytest.raises(BadValue, match="true or false"):
        flag(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(10, 10), (10.0, 10), ("10", 10), (" -3 ", -3), ("+7", 7), (0, 0)],
)
def test_integer_takes_whole_numbers(value: Any, expected: int) -> None:
    assert integer(value) == expected


@pytest.mark.parametrize("value", [10.5, "10.5", "1e3", "ten", "", True, None, "١٢", [1]])
def test_integer_refuses_fractions_words_and_bools(value: Any) -> None:
    with pytest.raises(BadValue, match="whole number"):
        integer(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, 1.0), (2.5, 2.5), (" 2.5 ", 2.5), ("-0.5", -0.5), ("1e3", 1000.0)],
)
def test_number_takes_numbers_and_their_spelling(value: Any, expected: float) -> None:
    assert number(value) == expected


@pytest.mark.parametrize(
    "value", [True, False, None, "", "soon", "nan", "inf", math.inf, math.nan, 10**400, {}]
)
def test_number_refuses_bools_words_and_non_finite_values(value: Any) -> None:
    with pytest.raises(BadValue):
        number(value)


def test_seconds_must_be_above_zero() -> None:
    assert seconds("0.5") == 0.5
    for value in (0, "0", -1, "soon"):
        with pytest.raises(BadValue):
            seconds(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("abc", "abc"), ("", ""), (94025, "94025"), (94025.0, "94025"), (1.5, "1.5")],
)
def test_text_takes_strings_and_numbers(value: Any, expected: str) -> None:
    assert text(value) == expected


@pytest.mark.parametrize("value", [True, None, math.nan, {"a": 1}, ["a"]])
def test_text_refuses_bools_null_and_objects(value: Any) -> None:
    with pytest.raises(BadValue, match="text"):
        text(value)


def test_one_of_answers_the_canonical_spelling() -> None:
    assert one_of(" starttls ", ("starttls", "tls", "none")) == "starttls"
    assert one_of("read", ("DELIVERED", "READ", "NONE")) == "READ"
    with pytest.raises(BadValue, match="one of DELIVERED, READ, NONE"):
        one_of("SEEN", ("DELIVERED", "READ", "NONE"))


def test_loose_gives_the_default_for_a_misfit() -> None:
    assert loose(integer, "12", 0) == 12
    assert loose(integer, "twelve", 0) == 0
    assert loose(number, None, None) is None
    assert loose(text, True, "") == ""
    assert loose(flag, "maybe", False) is False


def test_mapping_and_items_give_empty_containers_for_anything_else() -> None:
    assert mapping({"a": 1}) == {"a": 1}
    assert mapping(["a"]) == {}
    assert items(["a"]) == ["a"]
    assert items(("a",)) == ["a"]
    assert items("a") == []
    assert items({"a": 1}) == []
