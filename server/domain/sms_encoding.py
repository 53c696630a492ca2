"""How many SMS segments a text costs: GSM 03.38 (GSM-7) or UCS-2, per 3GPP TS 23.038.

Providers bill per segment and some throttle per segment, so the count is ours
to know before the provider answers (Twilio reports num_segments as 0 when a
Messaging Service picks the sender).

A single SMS carries 140 octets: 160 GSM-7 septets or 70 UTF-16 code units.
A concatenated message spends 6 octets of each part on the UDH, leaving 153
septets or 67 code units per part. A part never ends in the middle of a
character: an escaped GSM character (ESC + code, 2 septets) or a UTF-16
surrogate pair (2 code units) moves whole to the next part, which is why the
count is a packing, not just ceil(length / per_part).
"""

from __future__ import annotations

from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

# The default alphabet, in code order 0x00-0x7F. 0x1B (ESC) is left out: it is
# the escape to the extension table, not a character a text can contain.
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ"  # 0x1B, ESC, would come here
    "ÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)

# The extension table: each costs ESC plus its code, 2 septets.
_GSM_EXTENDED = frozenset("\f^{}\\[~]|€")

_GSM = _GSM_BASIC | _GSM_EXTENDED

SINGLE_GSM = 160
PART_GSM = 153
SINGLE_UCS2 = 70
PART_UCS2 = 67


def encoding_of(text: str) -> Encoding:
    """GSM-7 when every character is in the default alphabet or its extension."""
    return "GSM-7" if _GSM.issuperset(text) else "UCS-2"


def ucs2_characters(text: str) -> list[str]:
    """The characters that keep `text` out of GSM-7, each once, in order of appearance."""
    found = dict.fromkeys(ch for ch in text if ch not in _GSM_BASIC and ch not in _GSM_EXTENDED)
    return list(found)


def _units(text: str, encoding: Encoding) -> list[int]:
    """The cost of each character in its encoding's units (septets or code units)."""
    if encoding == "GSM-7":
        return [2 if ch in _GSM_EXTENDED else 1 for ch in text]
    # Characters outside the BMP (most emoji) take a surrogate pair.
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def _pack(units: list[int], per_part: int) -> int:
    parts, used = 1, 0
    for cost in units:
        if used + cost > per_part:
            parts, used = parts + 1, 0
        used += cost
    return parts


def _total(text: str, encoding: Encoding) -> int:
    """sum(_units(text, encoding)), counted by str methods rather than per character:
    every send is counted on the way in and again when the provider takes it."""
    if encoding == "GSM-7":
        return len(text) + sum(text.count(ch) for ch in _GSM_EXTENDED)
    # surrogatepass: a lone surrogate is one code unit, as _units counts it.
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def segments(text: str) -> int:
    """The number of SMS parts `text` is sent as.

    The empty text counts as 1: an SMS with no user data is still one message
    on the wire and is billed as one, and it keeps Accepted.segments >= 1.
    """
    encoding = encoding_of(text)
    single, per_part = (SINGLE_GSM, PART_GSM) if encoding == "GSM-7" else (SINGLE_UCS2, PART_UCS2)
    if _total(text, encoding) <= single:
        return 1
    return _pack(_units(text, encoding), per_part)


def length_in_units(text: str) -> int:
    """Septets for GSM-7 text, UTF-16 code units for UCS-2 text."""
    return _total(text, encoding_of(text))
