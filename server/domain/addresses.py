"""Recipient address checks: phone numbers to E.164, email syntax."""

from __future__ import annotations

import phonenumbers
from email_validator import EmailNotValidError, validate_email


class AddressError(ValueError):
    pass


def normalize_msisdn(raw: str, default_region: str | None = None) -> str:
    text = raw.strip()
    # Numbers are often written without the leading +; treat a bare run of
    # digits as international, which is how the public API examples use them.
    if text and text[0].isdigit() and default_region is None:
        text = "+" + text
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
