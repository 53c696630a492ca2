"""A quick yes for phone numbers already written in E.164.

Most numbers a batch carries are ``+`` and digits. For those, phonenumbers'
parse and validity check come down to: split off the country calling code,
check the national number's length, and match it against the patterns of the
region the code belongs to. This module builds those checks once per calling
code, from phonenumbers' own metadata (lengths, patterns, leading digits), so
a number costs a dictionary lookup and one or two compiled matches instead of
a parse.

It only ever says yes: ``e164`` returns the number when phonenumbers would
accept it and print it the same way, and None whenever it cannot be sure (a
national prefix, a leading zero, a shared calling code no region claims, a
non-geographic code, anything not + and digits), so the caller runs the full
parse, which gives every refusal and its reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import phonemetadata, phonenumberutil

# The national-number lengths phonenumbers accepts at all.
_MIN_NSN, _MAX_NSN = 2, 17
_POSSIBLE = (
    phonenumberutil.ValidationResult.IS_POSSIBLE,
    phonenumberutil.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
)


@dataclass(frozen=True, slots=True)
class _Region:
    # National prefixes phonenumbers would strip: a number that starts with
    # one is left to the full parse.
    national_prefix: re.Pattern[str] | None
    # Says which region of a shared calling code a number belongs to.
    leading_digits: re.Pattern[str] | None
    # By national-number length: the general pattern and the union of every
    # number type's pattern that allows that length. A number is valid when
    # both match it whole, as phonenumbers' type check finds a type.
    by_length: dict[int, tuple[re.Pattern[str], re.Pattern[str]]]

    def valid(self, nsn: str) -> bool:
        found = self.by_length.get(len(nsn))
        return found is not None and bool(found[0].fullmatch(nsn) and found[1].fullmatch(nsn))


@dataclass(frozen=True, slots=True)
class _Code:
    # Lengths a national number of the code's main region may have.
    possible: frozenset[int]
    main: _Region
    # Every region of the code, in phonenumbers' order, when there are several.
    regions: tuple[_Region, ...]


_TYPES = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
    "mobile",
)


def _fits(desc: phonemetadata.PhoneNumberDesc | None, length: int) -> bool:
    if desc is None or not desc.national_number_pattern:
        return False
    return not desc.possible_length or length in desc.possible_length


def _region(metadata: phonemetadata.PhoneMetadata) -> _Region:
    general = metadata.general_desc
    by_length: dict[int, tuple[re.Pattern[str], re.Pattern[str]]] = {}
    if general is not None and general.national_number_pattern:
        whole = re.compile(general.national_number_pattern)
        for length in range(_MIN_NSN, _MAX_NSN + 1):
            if not _fits(general, length):
                continue
            # Where mobile shares the fixed-line pattern, phonenumbers asks
            # the fixed-line description only, with its own lengths.
            types = _TYPES[:-1] if metadata.same_mobile_and_fixed_line_pattern else _TYPES
            patterns = [
                desc.national_number_pattern
                for desc in (getattr(metadata, t) for t in types)
                if desc is not None and _fits(desc, length)
            ]
            if patterns:
                union = "|".join(f"(?:{p})" for p in patterns)
                by_length[length] = (whole, re.compile(union))
    prefix = metadata.national_prefix_for_parsing
    leading = metadata.leading_digits
    return _Region(
        national_prefix=re.compile(prefix) if prefix else None,
        leading_digits=re.compile(leading) if leading else None,
        by_length=by_length,
    )


def _build(code: int) -> _Code | None:
    region_codes = phonenumberutil.COUNTRY_CODE_TO_REGION_CODE[code]
    if phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY in region_codes:
        return None
    metadatas = [phonemetadata.PhoneMetadata.metadata_for_region(r, None) for r in region_codes]
    if not metadatas or any(m is None for m in metadatas):
        return None
    main = metadatas[0]
    assert main is not None
    possible = frozenset(
        length
        for length in range(_MIN_NSN, _MAX_NSN + 1)
        # The length check only counts digits, so any digits of that length do.
        if phonenumberutil._test_number_length("9" * length, main) in _POSSIBLE
    )
    regions = tuple(_region(m) for m in metadatas if m is not None)
    return _Code(possible, regions[0], regions if len(regions) > 1 else ())


# Built the first time a calling code is seen (a few ms each): the tables
# describe the metadata, never a number, so every number is still checked.
_CODES: dict[str, _Code | None] = {}
_UNBUILT = object()


def e164(text: str) -> str | None:
    """``text`` if it is an E.164 number phonenumbers accepts as written, else None."""
    digits = text[1:]
    if text[:1] != "+" or not digits.isdigit() or not digits.isascii() or digits[0] == "0":
        return None
    for size in (1, 2, 3):
        prefix = digits[:size]
        code = _CODES.get(prefix, _UNBUILT)
        if code is _UNBUILT:
            if int(prefix) not in phonenumberutil.COUNTRY_CODE_TO_REGION_CODE:
                continue
            code = _CODES[prefix] = _build(int(prefix))
        # The first calling code that fits is the one phonenumbers takes.
        if code is None:
            return None
        assert isinstance(code, _Code)
        return text if _accepts(code, digits[size:]) else None
    return None


def _accepts(code: _Code, nsn: str) -> bool:
    main = code.main
    if not _MIN_NSN <= len(nsn) <= _MAX_NSN or nsn[0] == "0":
        return False
    if main.national_prefix is not None and main.national_prefix.match(nsn):
        return False
    if len(nsn) not in code.possible:
        return False
    if not code.regions:
        return main.valid(nsn)
    for region in code.regions:
        if region.leading_digits is not None:
            if region.leading_digits.match(nsn):
                return region.valid(nsn)
        elif region.valid(nsn):
            return True
    return False
