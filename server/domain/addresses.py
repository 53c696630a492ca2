"""Recipient address checks: phone numbers to E.164, email syntax."""

from __future__ import annotations

import re

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from server.domain import numbers


class AddressError(ValueError):
    pass


# The extension spellings phonenumbers reads, at the end of a number: their
# letters mark where the extension starts and are not part of the number.
_EXTENSION = re.compile(r"(?:;ext=|\s*(?:extension|extn|ext\.?|x|#|,)\s*)\d{1,7}#?\s*$", re.I)


def has_letters(raw: str) -> bool:
    """Letters in a phone number, outside a tel: prefix and an extension marker.

    phonenumbers would read them as keypad digits (1-800-FLOWERS); an address
    is sent to the number it spells out, or refused.
    """
    text = raw.strip()
    if text[:4].lower() == "tel:":
        text = text[4:]
    extension = _EXTENSION.search(text)
    if extension:
        text = text[: extension.start()]
    return any(ch.isalpha() for ch in text)


def normalize_msisdn(raw: str, default_region: str | None = None) -> str:
    # The common case, "+" and ASCII digits only, has no letters to look for
    # (that search cost as much as the table check).
    if default_region is None and raw[:1] == "+" and (known := numbers.e164(raw)) is not None:
        return known
    if has_letters(raw):
        raise AddressError("letters are not allowed in a phone number; write its digits")
    text = raw.strip()
    # Numbers are often written without the leading +; treat a bare run of
    # digits as international, which is how the public API examples use them.
    if text and text[0].isdigit() and default_region is None:
        text = "+" + text
    if default_region is None and (known := numbers.e164(text)) is not None:
        return known
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise AddressError(f"not a phone number: {exc}") from exc
    if not phonenumbers.is_possible_number(number) or not phonenumbers.is_valid_number(number):
        raise AddressError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str) -> str:
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise AddressError(str(exc)) from exc
