"""SMS segment counting: GSM-7 septets with escapes, UCS-2 with surrogate pairs."""

from __future__ import annotations

import random

import pytest

from adapters.sms_encoding import encoding_of, length_in_units, segments
from server.domain.smart_encoding import replacements_in, smart_encode
from server.domain.sms_encoding import ucs2_characters

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


def test_ucs2_characters_are_listed_once_in_order_of_appearance() -> None:
    assert ucs2_characters("caf\u00e9 \u2019x\u2019 \U0001f600 \u00e9") == ["\u2019", "\U0001f600"]
    assert ucs2_characters("plain \u20ac{text}") == []


def test_smart_encoding_replaces_typography_only_when_the_text_becomes_gsm() -> None:
    text = "\u201cHi\u201d\u00a0\u2013 it\u2019s\u2026\u200b"
    assert smart_encode(text) == '"Hi" - it\'s...'
    assert [(r.character, r.replacement, r.count) for r in replacements_in(text)] == [
        ("\u201c", '"', 1),
        ("\u201d", '"', 1),
        ("\u00a0", " ", 1),
        ("\u2013", "-", 1),
        ("\u2019", "'", 1),
        ("\u2026", "...", 1),
        ("\u200b", "", 1),
    ]
    # An emoji keeps it UCS-2 whatever is replaced, so nothing is.
    assert smart_encode("it\u2019s \U0001f600") == "it\u2019s \U0001f600"
    # Letters outside GSM-7 are never changed.
    assert smart_encode("\u00e7a \u2019") == "\u00e7a \u2019"
    assert segments(text) == 1 and segments("\u2019" + "a" * 80) == 2
    assert segments(smart_encode("\u2019" + "a" * 80)) == 1


def test_counts_agree_with_a_character_by_character_count() -> None:
    # The counts are taken with str methods; here each character is costed
    # one by one, as 3GPP TS 23.038 describes, over texts of every mix.
    rng = random.Random(23038)
    pools = [GSM_BASIC, GSM_EXTENDED, "жЖ€ü", "😀🚀", "\ud800"]

    def reference(text: str) -> tuple[int, int]:
        gsm = all(ch in GSM_BASIC or ch in GSM_EXTENDED for ch in text)
        if gsm:
            units = [2 if ch in GSM_EXTENDED else 1 for ch in text]
        else:
            units = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
        single, per_part = (160, 153) if gsm else (70, 67)
        parts, used = 1, 0
        for cost in units:
            if used + cost > per_part:
                parts, used = parts + 1, 0
            used += cost
        return sum(units), 1 if sum(units) <= single else parts

    for _ in range(400):
        mix = rng.sample(pools, rng.randint(1, 3))
        text = "".join(rng.choice(rng.choice(mix)) for _ in range(rng.randint(0, 340)))
        assert (length_in_units(text), segments(text)) == reference(text), repr(text)
