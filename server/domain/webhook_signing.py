"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; the key is
the base64 part of a ``whsec_`` secret. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _key(secret: str) -> bytes:
    # Receivers are handed the prefixed form; tolerate a bare base64 key as well.
    encoded = secret.removeprefix(SECRET_PREFIX)
    return base64.b64decode(encoded, validate=True)


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION}," + base64.b64encode(digest).decode("ascii")


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: int | None = None,
    tolerance_s: int = 300,
) -> bool:
    """True when any of the space-separated signatures matches and the timestamp is fresh.

    The freshness window is what stops a captured request being replayed later.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    webhook_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not webhook_id or not signatures:
        return False
    try:
        timestamp = int(stamp)
    except ValueError:
        return False
    current = int(time.time()) if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = sign(secret, webhook_id, timestamp, body).encode("ascii")
    # Compare every candidate so timing does not reveal which one matched.
    matched = False
    for candidate in signatures.split():
        if hmac.compare_digest(candidate.encode("utf-8", "replace"), expected):
            matched = True
    return matched
