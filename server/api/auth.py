"""Who is calling: API keys and JWTs resolved to a tenant, once, for every RPC.

One interceptor does it for gRPC and, since the REST façade calls through a
real channel with the caller's headers as metadata, for REST too.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from server.api.tokens import TokenError, TokenRules, verify
from server.domain.errors import Code, DomainError

log = logging.getLogger(__name__)

# Calls that carry their own proof (or need none) and act for the default tenant.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# Inbound webhooks check x-verify-token themselves.
VERIFY_TOKEN_METHODS = frozenset(
    {
        "/cim.v1.MessagingService/ReceiveMessages",
        "/cim.v1.MessagingService/UpdateContactInfo",
    }
)

_CACHE_MAX = 10_000
# Compared against when the api id is unknown, so that case costs the same.
_NO_DIGEST = hashlib.sha256(b"no such key").digest()


class KeyRecordLike(Protocol):
    @property
    def tenant_id(self) -> str: ...

    @property
    def secret_sha256(self) -> bytes: ...

    @property
    def revoked_at(self) -> int | None: ...


class KeySource(Protocol):
    async def get_api_key(self, api_id: str) -> KeyRecordLike | None: ...

    async def tenant_of_app(self, app_id: str) -> str | None: ...


def missing_credentials() -> DomainError:
    return DomainError(
        Code.UNAUTHENTICATED,
        "CREDENTIALS_MISSING",
        "send x-api-id and x-api-key, or authorization: Bearer <JWT>",
    )


def invalid_credentials() -> DomainError:
    # One answer for unknown, revoked and wrong keys: nothing to tell them apart by.
    return DomainError(Code.UNAUTHENTICATED, "INVALID_CREDENTIALS", "invalid API credentials")


def invalid_token() -> DomainError:
    return DomainError(Code.UNAUTHENTICATED, "INVALID_TOKEN", "invalid or expired token")


@dataclass(frozen=True, slots=True)
class Credentials:
    bearer: str = ""
    api_id: str = ""
    api_key: str = ""
    # An authorization header that is not "Bearer <token>".
    unusable: bool = False

    @staticmethod
    def from_metadata(metadata: object) -> Credentials:
        found: dict[str, str] = {}
        for key, value in metadata or ():  # type: ignore[attr-defined]
            if key in ("authorization", "x-api-id", "x-api-key") and key not in found:
                found[key] = value if isinstance(value, str) else value.decode()
        auth = found.get("authorization", "").strip()
        scheme, _, rest = auth.partition(" ")
        bearer = rest.strip() if scheme.lower() == "bearer" else ""
        return Credentials(
            bearer, found.get("x-api-id", ""), found.get("x-api-key", ""), bool(auth and not bearer)
        )

    @property
    def present(self) -> bool:
        return bool(self.bearer or self.api_id or self.api_key)


class Authenticator:
    """Resolves credentials to a tenant; key lookups are cached for a short TTL."""

    def __init__(
        self,
        keys: KeySource,
        tokens: TokenRules,
        *,
        cache_ttl_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._tokens = tokens
        self._ttl = cache_ttl_s
        self._clock = clock
        self._wall = wall
        self._key_cache: dict[str, tuple[float, KeyRecordLike | None]] = {}
        self._app_cache: dict[str, tuple[float, str | None]] = {}

    async def tenant_for(self, creds: Credentials) -> str:
        if creds.unusable:
            # Not ignored in favour of a key sent alongside: the caller meant it.
            raise DomainError(
                Code.UNAUTHENTICATED, "INVALID_TOKEN", "authorization must be Bearer <JWT>"
            )
        if creds.bearer:
            # A token wins over a key sent alongside it; the key is not looked at.
            return await self._by_token(creds.bearer)
        if not creds.present:
            raise missing_credentials()
        return await self._by_key(creds.api_id, creds.api_key)

    def forget(self, api_id: str) -> None:
        """Drop a cached key, so a revocation made in this process applies at once."""
        self._key_cache.pop(api_id, None)

    async def _by_key(self, api_id: str, secret: str) -> str:
        record = await self._key(api_id) if api_id and secret else None
        stored = record.secret_sha256 if record is not None else _NO_DIGEST
        given = hashlib.sha256(secret.encode()).digest()
        matches = hmac.compare_digest(given, stored)
        if record is None or not matches or record.revoked_at is not None:
            raise invalid_credentials()
        return record.tenant_id

    async def _by_token(self, token: str) -> str:
        try:
            app_id = verify(token, self._tokens, self._wall())
        except TokenError as exc:
            log.info("token refused: %s", exc)
            raise invalid_token() from None
        tenant = await self._app(app_id)
        if tenant is None:
            log.info("token refused: app %r has no tenant", app_id)
            raise invalid_token()
        return tenant

    async def _key(self, api_id: str) -> KeyRecordLike | None:
        now = self._clock()
        hit = self._key_cache.get(api_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        record = await self._keys.get_api_key(api_id)
        if len(self._key_cache) >= _CACHE_MAX:
            self._key_cache.clear()
        self._key_cache[api_id] = (now + self._ttl, record)
        return record

    async def _app(self, app_id: str) -> str | None:
        now = self._clock()
        hit = self._app_cache.get(app_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        tenant = await self._keys.tenant_of_app(app_id)
        if len(self._app_cache) >= _CACHE_MAX:
            self._app_cache.clear()
        self._app_cache[app_id] = (now + self._ttl, tenant)
        return tenant


def is_open(method: str) -> bool:
    return method.startswith(OPEN_PREFIXES)


def needs_credentials(method: str, metadata: object) -> bool:
    """Webhook methods act for the default tenant unless the caller names one."""
    if method in VERIFY_TOKEN_METHODS:
        return Credentials.from_metadata(metadata).present
    return True
