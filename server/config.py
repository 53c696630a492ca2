"""Settings, from the environment and command-line flags."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from server.domain.coerce import BadValue, flag
from server.domain.models import Channel

# What `make run` serves with no configuration: sandbox channels only. The
# second one carries the service number used in the public API's examples, so
# those examples can be sent as written.
ROLES = ("all", "api", "dispatcher")
DEFAULT_CHANNELS = (
    Channel("sandbox", "SANDBOX", "sandbox", lane="sandbox", name="Sandbox", sandbox=True),
    Channel(
        "91SERVICENUMBER",
        "SANDBOX",
        "sandbox",
        lane="91SERVICENUMBER",
        name="Example service number",
        sandbox=True,
    ),
    # One per batch channel type, so batch sends work with no provider account.
    Channel("sandbox-sms", "SMS", "sandbox", lane="CNNECT", name="Sandbox SMS", sandbox=True),
    Channel("sandbox-email", "EMAIL", "sandbox", name="Sandbox email", sandbox=True),
    Channel("sandbox-rcs", "RCS", "sandbox", name="Sandbox RCS", sandbox=True),
    Channel("sandbox-whatsapp", "WHATSAPP", "sandbox", name="Sandbox WhatsApp", sandbox=True),
)


DEFAULT_VERIFY_TOKEN = "cimhub-dev-verify-token"

# HS256 keys shorter than the hash output make brute force cheaper than it must be.
JWT_SECRET_MIN_BYTES = 32
JWT_LEEWAY_MAX_S = 60


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    grpc_port: int = 50051
    http_port: int = 8080
    database_url: str = "sqlite+aiosqlite:///var/cimhub.db"
    # PostgreSQL: how long opening (or waiting for) a connection may take, and
    # how long one statement may go unanswered (0: no bound); past either the
    # request fails as UNAVAILABLE instead of hanging.
    db_connect_timeout_s: float = 5.0
    db_command_timeout_s: float = 30.0
    # SQLite: NORMAL commits survive a crash of the process, FULL (an fsync
    # per commit) also a power loss or a crash of the machine.
    sqlite_synchronous: str = "NORMAL"
    channels: tuple[Channel, ...] = field(default=DEFAULT_CHANNELS)
    shutdown_grace: float = 5.0
    heartbeat_seconds: float = 15.0
    subscriber_buffer: int = 10_000
    # A subscriber that takes no data for this long is cut off with its cursor.
    subscriber_stall_seconds: float = 60.0
    # Public base URL of the REST port, used in provider callback URLs; when
    # empty, the bound address is used (fine on one machine, not behind a proxy).
    public_url: str = ""
    max_body_bytes: int = 1 << 20
    max_grpc_message_bytes: int = 4 << 20
    sandbox_delivery_delay: float = 0.05
    retry_base_ms: int = 1_000
    retry_cap_ms: int = 300_000
    retry_max_attempts: int = 8
    dispatch_lease_ms: int = 60_000
    dispatch_poll_interval: float = 0.25
    # What this process does: "api" serves calls and runs no background work,
    # "dispatcher" runs the background work (sending, webhooks, sweeps), "all"
    # both. Every role answers health, metrics and provider callbacks.
    role: str = "all"
    # Events older than this leave the log; resuming from before them gets a reset.
    event_retention_ms: int = 7 * 24 * 3600 * 1000
    webhook_retry_base_ms: int = 1_000
    # Receipts that cannot be delivered for this long are dead-lettered.
    webhook_max_age_ms: int = 24 * 3600 * 1000
    # A tenant webhook whose every POST has failed for this long is disabled
    # (and the tenant told on its event stream); 0 never disables it.
    webhook_disable_after_ms: int = 24 * 3600 * 1000
    # Shared secret the inbound webhooks (message/receive, contact/info) must
    # present as x-verify-token. The default only suits local use; empty
    # refuses every webhook call.
    verify_token: str = DEFAULT_VERIFY_TOKEN
    # Open sessions with no customer message or routing for this long are closed.
    session_inactivity_ms: int = 24 * 3600 * 1000
    session_sweep_interval: float = 30.0
    # A message the provider accepted but never reported on for this long is
    # EXPIRED, so every accepted message reaches a final status.
    receipt_timeout_ms: int = 48 * 3600 * 1000
    receipt_sweep_interval: float = 60.0
    # Where the channel's provider can be asked, a message past the receipt
    # timeout is asked about first: again every interval while the provider
    # says it is on its way, up to the limit of such answers; past the ceiling
    # (after the timeout) it is EXPIRED whatever the answers. 0 never asks.
    receipt_query_interval_ms: int = 3600 * 1000
    receipt_query_limit: int = 6
    receipt_query_ceiling_ms: int = 24 * 3600 * 1000
    # The longest a due fallback deadline waits to be seen (one armed here is
    # seen when it passes).
    fallback_sweep_interval: float = 0.25
    # -- scale-out --
    # Empty: events fan out in this process only. Set (redis://host:6379/0):
    # every replica's events reach every replica's subscribers.
    redis_url: str = ""
    # Approximate cap on the Redis event stream's length.
    redis_stream_max_len: int = 100_000
    # Claim loops per process; all of them share the channel bounds.
    dispatch_workers: int = 1
    # How often a replica looks for channels created, changed or deleted
    # elsewhere; with Redis, such changes also arrive at once as a notice.
    channel_sync_interval: float = 1.0
    # -- authentication --
    # A key the server makes sure exists (tenant "default") at start; without
    # it, an empty database gets a fresh key printed once.
    bootstrap_api_id: str = ""
    bootstrap_api_key: str = field(default="", repr=False)
    # app id -> base64 HS256 secret; the app's tenant comes from the apps table.
    jwt_secrets: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    jwt_max_age_s: int = 300
    jwt_leeway_s: int = 30
    # Key lookups are cached this long; revocation elsewhere takes effect within it.
    key_cache_ttl_s: float = 3.0
    # -- limits, per tenant --
    rate_per_s: float = 1000.0
    rate_burst: int = 2000
    # Generous: a tenant may fan out to many subscribers; this only stops runaways.
    max_streams_per_tenant: int = 5_000
    # -- metrics --
    # Off: no /metrics and no measuring at all (what the benchmark compares with).
    metrics_enabled: bool = True
    # Set: /metrics wants "Authorization: Bearer <token>".
    metrics_token: str = field(default="", repr=False)
    # A listener of its own for /metrics (0 picks a free port); None serves it
    # on the REST port only.
    metrics_port: int | None = None
    # -- outbound HTTP to tenant-supplied URLs --
    # "production" requires https for tenant-supplied URLs.
    env: str = "development"
    # CIDRs that outbound HTTP may reach even though they are not global.
    outbound_allow: tuple[str, ...] = ()
    # "text" for people at a terminal, "json" (one object a line) for collectors.
    log_format: str = "text"

    def __post_init__(self) -> None:
        if not 0 <= self.jwt_leeway_s <= JWT_LEEWAY_MAX_S:
            raise ValueError(f"jwt leeway must be 0..{JWT_LEEWAY_MAX_S} seconds")
        if self.jwt_max_age_s <= 0:
            raise ValueError("jwt max age must be positive")
        for app_id, encoded in self.jwt_secrets:
            decoded = decode_jwt_secret(encoded)
            if decoded is None:
                raise ValueError(f"JWT secret for app {app_id!r} is not valid base64")
            if len(decoded) < JWT_SECRET_MIN_BYTES:
                raise ValueError(
                    f"JWT secret for app {app_id!r} decodes to {len(decoded)} bytes;"
                    f" at least {JWT_SECRET_MIN_BYTES} are required"
                )
        if self.receipt_query_interval_ms <= 0 or self.receipt_query_limit < 1:
            raise ValueError("receipt query interval must be positive and the limit at least 1")
        if self.receipt_query_ceiling_ms < 0:
            raise ValueError("receipt query ceiling must not be negative")
        if self.db_connect_timeout_s <= 0 or self.db_command_timeout_s < 0:
            raise ValueError("database connect timeout must be positive, command timeout >= 0")
        if self.sqlite_synchronous not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError(
                f"SQLite synchronous must be NORMAL, FULL or EXTRA, got {self.sqlite_synchronous!r}"
            )
        if self.log_format not in ("text", "json"):
            raise ValueError(f"log format must be text or json, got {self.log_format!r}")
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.rate_per_s <= 0 or self.rate_burst < 1:
            raise ValueError("rate limit must be positive with a burst of at least 1")
        if bool(self.bootstrap_api_id) != bool(self.bootstrap_api_key):
            raise ValueError("bootstrap api id and api key must be set together")
        for cidr in self.outbound_allow:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"outbound allow-list entry {cidr!r} is not a CIDR") from exc

    @property
    def production(self) -> bool:
        return self.env.strip().lower() == "production"

    @property
    def runs_background_work(self) -> bool:
        return self.role != "api"

    @staticmethod
    def from_env(env: Mapping[str, str]) -> Settings:
        s = Settings()
        if "CIMHUB_HOST" in env:
            s = replace(s, host=env["CIMHUB_HOST"])
        if "CIMHUB_GRPC_PORT" in env:
            s = replace(s, grpc_port=int(env["CIMHUB_GRPC_PORT"]))
        if "CIMHUB_HTTP_PORT" in env:
            s = replace(s, http_port=int(env["CIMHUB_HTTP_PORT"]))
        if "CIMHUB_DATABASE_URL" in env:
            s = replace(s, database_url=env["CIMHUB_DATABASE_URL"])
        if "CIMHUB_CHANNELS_FILE" in env:
            s = replace(s, channels=load_channels(Path(env["CIMHUB_CHANNELS_FILE"])))
        if "CIMHUB_SHUTDOWN_GRACE" in env:
            s = replace(s, shutdown_grace=float(env["CIMHUB_SHUTDOWN_GRACE"]))
        if "CIMHUB_PUBLIC_URL" in env:
            s = replace(s, public_url=env["CIMHUB_PUBLIC_URL"])
        if "CIMHUB_EVENT_RETENTION_SECONDS" in env:
            s = replace(s, event_retention_ms=int(env["CIMHUB_EVENT_RETENTION_SECONDS"]) * 1000)
        if "CIMHUB_DISPATCH_LEASE_MS" in env:
            s = replace(s, dispatch_lease_ms=int(env["CIMHUB_DISPATCH_LEASE_MS"]))
        if "CIMHUB_SANDBOX_DELIVERY_DELAY" in env:
            s = replace(s, sandbox_delivery_delay=float(env["CIMHUB_SANDBOX_DELIVERY_DELAY"]))
        if "CIMHUB_HEARTBEAT_SECONDS" in env:
            s = replace(s, heartbeat_seconds=float(env["CIMHUB_HEARTBEAT_SECONDS"]))
        if "CIMHUB_VERIFY_TOKEN" in env:
            s = replace(s, verify_token=env["CIMHUB_VERIFY_TOKEN"])
        if "CIMHUB_SESSION_INACTIVITY_MS" in env:
            s = replace(s, session_inactivity_ms=int(env["CIMHUB_SESSION_INACTIVITY_MS"]))
        if "CIMHUB_SESSION_SWEEP_SECONDS" in env:
            s = replace(s, session_sweep_interval=float(env["CIMHUB_SESSION_SWEEP_SECONDS"]))
        if "CIMHUB_REDIS_URL" in env:
            s = replace(s, redis_url=env["CIMHUB_REDIS_URL"].strip())
        if "CIMHUB_REDIS_STREAM_MAX_LEN" in env:
            s = replace(s, redis_stream_max_len=int(env["CIMHUB_REDIS_STREAM_MAX_LEN"]))
        if "CIMHUB_WEBHOOK_DISABLE_AFTER_SECONDS" in env:
            seconds = float(env["CIMHUB_WEBHOOK_DISABLE_AFTER_SECONDS"])
            s = replace(s, webhook_disable_after_ms=max(0, round(seconds * 1000)))
        if "CIMHUB_LOG_FORMAT" in env:
            s = replace(s, log_format=env["CIMHUB_LOG_FORMAT"].strip().lower())
        if "CIMHUB_DISPATCH_WORKERS" in env:
            s = replace(s, dispatch_workers=max(1, int(env["CIMHUB_DISPATCH_WORKERS"])))
        if "CIMHUB_CHANNEL_SYNC_SECONDS" in env:
            s = replace(s, channel_sync_interval=float(env["CIMHUB_CHANNEL_SYNC_SECONDS"]))
        if "CIMHUB_DISPATCH_POLL_SECONDS" in env:
            s = replace(s, dispatch_poll_interval=float(env["CIMHUB_DISPATCH_POLL_SECONDS"]))
        if "CIMHUB_ROLE" in env:
            s = replace(s, role=env["CIMHUB_ROLE"].strip().lower())
        return _auth_from_env(s, env)


def _auth_from_env(s: Settings, env: Mapping[str, str]) -> Settings:
    if env.get("CIMHUB_BOOTSTRAP_API_ID") or env.get("CIMHUB_BOOTSTRAP_API_KEY"):
        s = replace(
            s,
            bootstrap_api_id=env.get("CIMHUB_BOOTSTRAP_API_ID", ""),
            bootstrap_api_key=env.get("CIMHUB_BOOTSTRAP_API_KEY", ""),
        )
    if env.get("CIMHUB_JWT_SECRETS"):
        try:
            table = json.loads(env["CIMHUB_JWT_SECRETS"])
        except json.JSONDecodeError as exc:
            raise ValueError("CIMHUB_JWT_SECRETS must be a JSON object") from exc
        if not isinstance(table, dict):
            raise ValueError("CIMHUB_JWT_SECRETS must be a JSON object")
        s = replace(s, jwt_secrets=tuple((str(k), str(v)) for k, v in table.items()))
    numbers = {
        "CIMHUB_JWT_MAX_AGE_SECONDS": ("jwt_max_age_s", int),
        "CIMHUB_JWT_LEEWAY_SECONDS": ("jwt_leeway_s", int),
        "CIMHUB_KEY_CACHE_SECONDS": ("key_cache_ttl_s", float),
        "CIMHUB_RATE_PER_SECOND": ("rate_per_s", float),
        "CIMHUB_RATE_BURST": ("rate_burst", int),
        "CIMHUB_MAX_STREAMS_PER_TENANT": ("max_streams_per_tenant", int),
        "CIMHUB_MAX_BODY_BYTES": ("max_body_bytes", int),
        "CIMHUB_MAX_GRPC_MESSAGE_BYTES": ("max_grpc_message_bytes", int),
        "CIMHUB_RECEIPT_TIMEOUT_MS": ("receipt_timeout_ms", int),
        "CIMHUB_RECEIPT_SWEEP_SECONDS": ("receipt_sweep_interval", float),
        "CIMHUB_RECEIPT_QUERY_INTERVAL_MS": ("receipt_query_interval_ms", int),
        "CIMHUB_RECEIPT_QUERY_LIMIT": ("receipt_query_limit", int),
        "CIMHUB_RECEIPT_QUERY_CEILING_MS": ("receipt_query_ceiling_ms", int),
        "CIMHUB_DB_CONNECT_TIMEOUT_SECONDS": ("db_connect_timeout_s", float),
        "CIMHUB_DB_COMMAND_TIMEOUT_SECONDS": ("db_command_timeout_s", float),
        "CIMHUB_FALLBACK_SWEEP_SECONDS": ("fallback_sweep_interval", float),
    }
    for name, (attr, kind) in numbers.items():
        if name in env:
            s = replace(s, **{attr: kind(env[name])})
    if "CIMHUB_ENV" in env:
        s = replace(s, env=env["CIMHUB_ENV"])
    if "CIMHUB_SQLITE_SYNCHRONOUS" in env:
        s = replace(s, sqlite_synchronous=env["CIMHUB_SQLITE_SYNCHRONOUS"].strip().upper())
    if "CIMHUB_METRICS" in env:
        s = replace(s, metrics_enabled=_switch("CIMHUB_METRICS", env["CIMHUB_METRICS"]))
    if "CIMHUB_METRICS_TOKEN" in env:
        s = replace(s, metrics_token=env["CIMHUB_METRICS_TOKEN"].strip())
    if env.get("CIMHUB_METRICS_PORT", "").strip():
        s = replace(s, metrics_port=int(env["CIMHUB_METRICS_PORT"]))
    if "CIMHUB_OUTBOUND_ALLOW" in env:
        cidrs = tuple(c.strip() for c in env["CIMHUB_OUTBOUND_ALLOW"].split(",") if c.strip())
        s = replace(s, outbound_allow=cidrs)
    return s


def _switch(name: str, value: str) -> bool:
    try:
        return flag(value)
    except BadValue:
        raise ValueError(f"{name} must be on or off, got {value!r}") from None


def decode_jwt_secret(encoded: str) -> bytes | None:
    """The HS256 key behind a base64 (standard or URL-safe, padding optional) secret."""
    text = encoded.strip()
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None


def load_channels(path: Path) -> tuple[Channel, ...]:
    """Channels from a TOML file: [[channels]] tables with id, type, provider, ..."""
    data = tomllib.loads(path.read_text())
    known = {"id", "type", "provider", "lane", "name", "sandbox", "tps", "max_in_flight"}
    return tuple(
        Channel(
            channel_id=str(c["id"]),
            contact_type=str(c.get("type", "SANDBOX")).upper(),
            provider=str(c.get("provider", "sandbox")),
            lane=str(c.get("lane", "")),
            name=str(c.get("name", "")),
            sandbox=bool(c.get("sandbox", c.get("provider", "sandbox") == "sandbox")),
            tps=int(c.get("tps", 0)),
            max_in_flight=int(c.get("max_in_flight", 64)),
            settings={k: v for k, v in c.items() if k not in known},
        )
        for c in data.get("channels", [])
    )
