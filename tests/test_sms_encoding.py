"""SMS segment counting: GSM-7 septets with escapes, UCS-2 with surrogate pairs."""

from __future__ import annotations

import pytest

from adapters.sms_encoding import encoding_of, length_in_units, segments

GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENDED = "\f^{}\\[~]|€"


@pytest.mark.parametrize(
    "length,expected", [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)]
)
def test_gsm_boundaries(length: int, expected: int) -> None:
    text = "a" * length
    assert encoding_of(text) == "GSM-7"
    assert segments(text) == expected


@pytest.mark.parametrize("length,expected", [(70, 1), (71, 2), (134, 2), (135, 3)])
def test_ucs2_boundaries(length: int, expected: int) -> None:
    text = "ж" * length
    assert encoding_of(text) == "UCS-2"
    assert segments(text) == expected


def test_whole_default_alphabet_is_gsm_and_one_septet_each() -> None:
    assert len(GSM_BASIC) == 127  # 128 codes less ESC
    assert encoding_of(GSM_BASIC) == "GSM-7"
    assert length_in_units(GSM_BASIC) == 127


@pytest.mark.parametrize("ch", list(GSM_EXTENDED))
def test_extension_characters_cost_two_septets(ch: str) -> None:
    assert encoding_of(ch) == "GSM-7"
    assert length_in_units(ch) == 2
    assert segments(ch * 80) == 1  # 160 septets
    assert segments(ch * 81) == 2  # 162 septets


def test_euro_and_brace_mixed_with_plain_text() -> None:
    assert segments("€" * 80) == 1
    assert segments("€" * 81) == 2
    assert segments("{" + "a" * 158) == 1  # 160 septets
    assert segments("{" + "a" * 159) == 2  # 161 septets


def test_escape_pair_is_not_split_across_parts() -> None:
    # 306 septets would fit two 153-septet parts, but "€" (ESC + code) lands on
    # septets 153-154, so it moves whole to the second part and the last "a"
    # spills into a third.
    text = "a" * 152 + "€" + "a" * 152
    assert length_in_units(text) == 306
    assert segments(text) == 3  # 152 | € + 151 | 1
    assert segments("a" * 151 + "€" + "a" * 153) == 2  # 153 | 153, no straddle


def test_surrogate_pair_is_not_split_across_parts() -> None:
    text = "ж" * 66 + "😀" + "ж" * 66  # 134 code units
    assert length_in_units(text) == 134
    assert segments(text) == 3  # 66 | 😀 + 65 | 1
    assert segments("ж" * 65 + "😀" + "ж" * 67) == 2


def test_one_emoji_forces_ucs2() -> None:
    text = "a" * 69 + "😀"
    assert encoding_of(text) == "UCS-2"
    assert length_in_units(text) == 71  # the emoji is a surrogate pair
    assert segments(text) == 2
    assert segments("a" * 68 + "😀") == 1


def test_characters_outside_gsm_force_ucs2() -> None:
    for ch in ("ç", "á", "`", "\t", "\x1b", "€\u0301"):
        assert encoding_of("hello " + ch) == "UCS-2", repr(ch)


def test_empty_text_is_one_segment() -> None:
    # An SMS without user data is still one message on the wire and billed as one.
    assert encoding_of("") == "GSM-7"
    assert segments("") == 1
