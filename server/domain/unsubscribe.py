"""Signed one-click unsubscribe tokens (RFC 8058): who, on what, signed by the tenant's key.

The token is the whole proof: the POST that carries it is unauthenticated, so
it names its tenant and is signed with a key only the hub holds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

_PURPOSE = b"cim-hub list-unsubscribe v1"
MAX_TOKEN = 2048


@dataclass(frozen=True, slots=True)
class UnsubscribeClaim:
    tenant_id: str
    address: str
    scope: str
    # The message whose link was used, for the ledger's history.
    message_id: str = ""


def key_from(secret: str) -> bytes:
    """The signing key for one-click links, kept apart from the secret's other uses."""
    return hmac.new(secret.encode(), _PURPOSE, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, claim: UnsubscribeClaim) -> str:
    body = json.dumps(
        {"t": claim.tenant_id, "a": claim.address, "s": claim.scope, "m": claim.message_id},
        separators=(",", ":"),
    ).encode()
    mac = hmac.new(key, body, hashlib.sha256).digest()
    return f"{_b64(body)}.{_b64(mac)}"


def unverified(token: str) -> UnsubscribeClaim | None:
    """The claim a token makes, before its signature is checked; None if malformed."""
    if len(token) > MAX_TOKEN or token.count(".") != 1:
        return None
    body_part = token.split(".", 1)[0]
    try:
        doc = json.loads(_unb64(body_part))
        claim = UnsubscribeClaim(str(doc["t"]), str(doc["a"]), str(doc["s"]), str(doc.get("m", "")))
    except (ValueError, KeyError, TypeError):
        return None
    return claim if claim.tenant_id and claim.address else None


def verify(key: bytes, token: str) -> UnsubscribeClaim | None:
    claim = unverified(token)
    if claim is None:
        return None
    body_part, mac_part = token.split(".", 1)
    try:
        given = _unb64(mac_part)
        body = _unb64(body_part)
    except ValueError:
        return None
    expected = hmac.new(key, body, hashlib.sha256).digest()
    return claim if hmac.compare_digest(given, expected) else None
