"""One set of rules for values whose type the source does not fix.

Channel settings come from TOML or JSON, message content and provider
payloads from JSON, environment settings from strings: the same number may
arrive as 10, 10.0 or "10", a switch as true or "yes". Each rule here says once
what a value of one kind may look like and raises BadValue, naming no field,
when it does not fit; the caller knows which setting or field it was reading
and says so. `loose` turns a misfit into a default, for input the hub only
reads and never refuses (a provider's webhook, content stored long ago).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

T = TypeVar("T")
D = TypeVar("D")

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})
# ASCII digits only: int() would also take other scripts' digits.
_INTEGER = re.compile(r"[+-]?[0-9]+")


class BadValue(ValueError):
    """A value does not fit its rule; the message says why, e.g. "must be a number"."""


def flag(value: Any) -> bool:
    """A JSON/TOML bool, or one of the words true/1/yes/on, false/0/no/off (any case).

    Anything else is refused rather than read as false: a misspelt "ture"
    must not quietly switch something off.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str | int):
        word = str(value).strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise BadValue("must be true or false")


def integer(value: Any) -> int:
    """A whole number: an int, a float without a fraction, or a string of digits.

    A fraction is refused, never cut off: 10.5 connections is a mistake.
    """
    if isinstance(value, bool):
        raise BadValue("must be a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    raise BadValue("must be a whole number")


def number(value: Any) -> float:
    """A finite number, or a string that spells one; bools are not numbers."""
    if isinstance(value, bool):
        raise BadValue("must be a number")
    try:
        if isinstance(value, int | float):
            result = float(value)
        elif isinstance(value, str):
            result = float(value.strip())
        else:
            raise BadValue("must be a number")
    except (ValueError, OverflowError):
        raise BadValue("must be a number") from None
    if not math.isfinite(result):
        raise BadValue("must be a finite number")
    return result


def seconds(value: Any) -> float:
    """A duration in seconds: a number above zero."""
    result = number(value)
    if result <= 0:
        raise BadValue("must be a number of seconds above 0")
    return result


def text(value: Any) -> str:
    """A string, or a number written as text (a whole float without its .0:
    a zip code that arrived as 94025.0 is "94025"). Bools, null and
    objects are not text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        raise BadValue("must be text")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    raise BadValue("must be text")


def one_of(value: Any, options: Collection[str]) -> str:
    """One of the given words, matched without regard to case or surrounding space."""
    word = text(value).strip()
    for option in options:
        if word.lower() == option.lower():
            return option
    raise BadValue(f"must be one of {', '.join(options)}")


def loose(rule: Callable[[Any], T], value: Any, default: D) -> T | D:
    """The rule's reading of value, or default when it does not fit."""
    try:
        return rule(value)
    except BadValue:
        return default


def as_text(value: Any) -> str:
    """`text`, or "" for a value that is not text: for fields read, never refused."""
    # The common cases first: reading stored content asks for a dozen fields
    # that are absent, and raising and catching BadValue for each cost more
    # than the rest of the read.
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return loose(text, value, "")


def mapping(value: Any) -> Mapping[str, Any]:
    """A JSON object, or an empty one for anything else."""
    return value if isinstance(value, Mapping) else {}


def items(value: Any) -> list[Any]:
    """A JSON array, or an empty one for anything else."""
    return list(value) if isinstance(value, list | tuple) else []
