"""HS256 JSON Web Tokens as the public API uses them: iss is the app id, iat is required.

Hand-written on hmac so that exactly one algorithm exists: there is no code
path that could be talked into "none" or an asymmetric key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class TokenError(Exception):
    """Why a token was refused; for logs only, callers get one generic answer."""


@dataclass(frozen=True, slots=True)
class TokenRules:
    # app id -> decoded HS256 key
    keys: Mapping[str, bytes]
    max_age_s: int = 300
    leeway_s: int = 30


def _b64url(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.urlsafe_b64decode(padded.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise TokenError("segment is not base64url") from exc


def _json(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64url(segment))
    # ValueError also covers integers too long for int(); RecursionError, nesting.
    except (ValueError, RecursionError) as exc:
        raise TokenError("segment is not JSON") from exc
    if not isinstance(value, dict):
        raise TokenError("segment is not a JSON object")
    return value


# Year 10000; a later time is no date, and a float could not hold it exactly.
_MAX_SECONDS = 253_402_300_800


def _seconds(claims: Mapping[str, Any], name: str) -> int | None:
    """A time claim as whole seconds since the epoch.

    NaN compares false with everything, so a NaN ``iat`` would pass every age
    check; only finite whole numbers in a plausible range are times.
    """
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int in Python, and never a time.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TokenError(f"{name} is not a whole number")
    if not 0 <= value <= _MAX_SECONDS:
        raise TokenError(f"{name} is out of range")
    return value


def verify(token: str, rules: TokenRules, now: float) -> str:
    """The app id (iss) of a valid token; TokenError otherwise."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("not three segments")
    header = _json(parts[0])
    if header.get("alg") != "HS256":
        raise TokenError("algorithm is not HS256")
    claims = _json(parts[1])
    app_id = claims.get("iss")
    if not isinstance(app_id, str) or not app_id:
        raise TokenError("iss missing")
    key = rules.keys.get(app_id)
    if key is None:
        raise TokenError("unknown issuer")
    expected = hmac.new(key, f"{parts[0]}.{parts[1]}".encode("ascii"), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, _b64url(parts[2])):
        raise TokenError("bad signature")
    issued = _seconds(claims, "iat")
    if issued is None:
        raise TokenError("iat missing")
    leeway = rules.leeway_s
    if issued > now + leeway:
        raise TokenError("issued in the future")
    if now - issued > rules.max_age_s + leeway:
        raise TokenError("too old")
    expires = _seconds(claims, "exp")
    if expires is not None and now >= expires + leeway:
        raise TokenError("expired")
    not_before = _seconds(claims, "nbf")
    if not_before is not None and now + leeway < not_before:
        raise TokenError("not yet valid")
    return app_id


def sign(claims: Mapping[str, Any], key: bytes, alg: str = "HS256") -> str:
    """Make a token; for clients and tests (only HS256 verifies)."""

    def enc(obj: Mapping[str, Any]) -> str:
        raw = json.dumps(obj, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = enc({"alg": alg, "typ": "JWT"})
    body = enc(claims)
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}.get(alg)
    if digest is None:
        return f"{head}.{body}."
    mac = hmac.new(key, f"{head}.{body}".encode(), digest).digest()
    return f"{head}.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
