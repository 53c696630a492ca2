"""SMS segment counting lives in the domain, which caps rendered texts with it;
the adapters keep importing it from here."""

from server.domain.sms_encoding import (
    PART_GSM,
    PART_UCS2,
    SINGLE_GSM,
    SINGLE_UCS2,
    Encoding,
    encoding_of,
    length_in_units,
    segments,
)

__all__ = [
    "PART_GSM",
    "PART_UCS2",
    "SINGLE_GSM",
    "SINGLE_UCS2",
    "Encoding",
    "encoding_of",
    "length_in_units",
    "segments",
]
