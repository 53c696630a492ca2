"""Settings, from the environment and command-line flags."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from server.domain.models import Channel

# What `make run` serves with no configuration: sandbox channels only. The
# second one carries the service number used in the public API's examples, so
# those examples can be sent as written.
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


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    grpc_port: int = 50051
    http_port: int = 8080
    database_url: str = "sqlite+aiosqlite:///var/cimhub.db"
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
    # Events older than this leave the log; resuming from before them gets a reset.
    event_retention_ms: int = 7 * 24 * 3600 * 1000
    webhook_retry_base_ms: int = 1_000
    # Receipts that cannot be delivered for this long are dead-lettered.
    webhook_max_age_ms: int = 24 * 3600 * 1000
    # Shared secret the inbound webhooks (message/receive, contact/info) must
    # present as x-verify-token. The default only suits local use; empty
    # refuses every webhook call.
    verify_token: str = DEFAULT_VERIFY_TOKEN
    # Open sessions with no customer message or routing for this long are closed.
    session_inactivity_ms: int = 24 * 3600 * 1000
    session_sweep_interval: float = 30.0
    # -- scale-out --
    # Empty: events fan out in this process only. Set (redis://host:6379/0):
    # every replica's events reach every replica's subscribers.
    redis_url: str = ""
    # Approximate cap on the Redis event stream's length.
    redis_stream_max_len: int = 100_000
    # Claim loops per process; all of them share the channel bounds.
    dispatch_workers: int = 1

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
        if "CIMHUB_DISPATCH_WORKERS" in env:
            s = replace(s, dispatch_workers=max(1, int(env["CIMHUB_DISPATCH_WORKERS"])))
        return s


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
