"""The composition root: the one place that builds and wires every part."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from aiohttp import web

from adapters.base import AdapterContext
from adapters.registry import build_adapter
from server.api.auth import Authenticator
from server.api.bootstrap import bootstrap_keys
from server.api.config import ConfigServicer
from server.api.context import DEFAULT_TENANT
from server.api.customers import CustomerServicer
from server.api.guard import GuardInterceptor
from server.api.inbound import InboundApi
from server.api.limits import RateLimiter, StreamCounter
from server.api.local_channel import LocalChannel
from server.api.messaging import MessagingServicer
from server.api.notifications import NotificationServicer
from server.api.server import BuiltServer, Services, build_server, set_serving
from server.api.sessions import SessionServicer
from server.api.tokens import TokenRules
from server.config import Settings, decode_jwt_secret
from server.dispatch.dispatcher import Dispatcher
from server.dispatch.housekeeping import Housekeeper
from server.dispatch.redis_pacing import SharedPacing
from server.dispatch.retry import RetryPolicy
from server.domain.events import StoredEvent
from server.domain.inbound import InboundBatch, from_provider
from server.domain.provider import ChannelAdapter, InboundMessage
from server.events.bus import EventBus, InProcessBus
from server.events.redis_bus import RedisBus, RedisBusConfig
from server.gateway.app import create_app, route_table
from server.gateway.callbacks import add_callback_routes
from server.gateway.openapi import add_docs_routes
from server.net.addresses import AddressPolicy, url_refusal
from server.net.http import OutboundHttp
from server.runtime_channels import RuntimeChannels
from server.storage.store import SqlStore
from server.storage.writer import now_ms
from server.sweeper import InactivitySweeper
from server.webhooks.sender import WebhookSender

log = logging.getLogger(__name__)


@dataclass
class HealthFlag:
    serving: bool = True


@dataclass
class PublicUrl:
    """Where providers reach our callbacks; defaults to the bound HTTP address."""

    configured: str = ""
    fallback: str = ""

    def default(self, url: str) -> None:
        self.fallback = url

    def get(self) -> str:
        return self.configured or self.fallback


@dataclass
class Hub:
    settings: Settings
    bus: EventBus
    store: SqlStore
    dispatcher: Dispatcher
    webhook_sender: WebhookSender
    housekeeper: Housekeeper
    http: OutboundHttp
    adapters: dict[str, ChannelAdapter]
    grpc_server: BuiltServer
    gateway_channel: grpc.aio.Channel
    http_runner: web.AppRunner
    http_port: int
    health: HealthFlag
    sweeper: InactivitySweeper | None = None
    pacing: SharedPacing | None = None
    auth: Authenticator | None = None

    @property
    def grpc_port(self) -> int:
        return self.grpc_server.port

    async def revoke_key(self, api_id: str) -> bool:
        """Revoke a key; this server refuses it from the next call on."""
        revoked = await self.store.revoke_api_key(api_id)
        if self.auth is not None:
            self.auth.forget(api_id)
        return revoked

    @classmethod
    async def start(
        cls,
        settings: Settings,
        adapters: dict[str, ChannelAdapter] | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> Hub:
        bus = _event_bus(settings)
        await bus.start()
        wake_webhooks: list[Callable[[], None]] = []

        def publish(events: Sequence[StoredEvent]) -> None:
            bus.publish(events)
            for wake in wake_webhooks:
                wake()

        store = await SqlStore.open(settings.database_url, publish, clock=clock)
        await bootstrap_keys(settings, store)
        auth = _authenticator(settings, store)
        outbound_policy = AddressPolicy.of(settings.outbound_allow, https_only=settings.production)
        channels = {c.channel_id: c for c in settings.channels}
        file_channels = frozenset(channels)
        # Channels created over the API; the channels file wins a clash of ids.
        channel_owners: dict[str, str] = {}
        for owner, stored in await store.stored_channels():
            if stored.channel_id not in channels:
                channels[stored.channel_id] = stored
                channel_owners[stored.channel_id] = owner
        pacing = SharedPacing(settings.redis_url) if settings.redis_url else None
        # Filled once the HTTP port, and so the callback URL, is known; the
        # dispatcher and the callback routes share this one dict.
        channel_adapters: dict[str, ChannelAdapter] = {}
        dispatcher = Dispatcher(
            store,
            channel_adapters,
            lease_ms=settings.dispatch_lease_ms,
            retry=RetryPolicy(
                settings.retry_base_ms, settings.retry_cap_ms, settings.retry_max_attempts
            ),
            poll_interval=settings.dispatch_poll_interval,
            clock=clock,
            channels=channels,
            workers=settings.dispatch_workers,
            # With Redis, a channel's TPS holds across replicas, not per replica.
            pacer_for=pacing.pacer_for if pacing is not None else None,
        )
        runtime_channels = RuntimeChannels(
            channels,
            channel_adapters,
            dispatcher.on_receipt,
            sandbox_delay=settings.sandbox_delivery_delay,
            limits=dispatcher,
        )
        built = build_server(
            Services(
                messaging=MessagingServicer(
                    store,
                    channels,
                    dispatcher.wake,
                    clock,
                    inbound=InboundApi(store, channels, settings.verify_token),
                    url_check=lambda url: url_refusal(outbound_policy, url),
                    channel_owners=channel_owners,
                ),
                notifications=NotificationServicer(
                    store,
                    bus,
                    heartbeat_seconds=settings.heartbeat_seconds,
                    buffer_limit=settings.subscriber_buffer,
                    stall_seconds=settings.subscriber_stall_seconds,
                ),
                sessions=SessionServicer(store),
                config=ConfigServicer(
                    channels,
                    store,
                    runtime_channels,
                    file_channels=file_channels,
                    channel_owners=channel_owners,
                    url_check=lambda url: url_refusal(outbound_policy, url),
                ),
                customers=CustomerServicer(store),
            ),
            address=f"{settings.host}:{settings.grpc_port}",
            max_message_bytes=settings.max_grpc_message_bytes,
            interceptors=[
                GuardInterceptor(
                    auth,
                    RateLimiter(settings.rate_per_s, settings.rate_burst),
                    StreamCounter(settings.max_streams_per_tenant),
                    settings.max_streams_per_tenant,
                )
            ],
        )
        await built.server.start()
        await set_serving(built.health, True)

        # The facade's unary calls run in this process through the server's own
        # handlers and interceptor chain; its streams use a real channel.
        local_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
        gateway_channel = LocalChannel(
            built.handlers,
            built.interceptors,
            grpc.aio.insecure_channel(f"{local_host}:{built.port}"),
        )
        app = create_app(gateway_channel, max_body_bytes=settings.max_body_bytes)
        health_flag = HealthFlag()
        public = PublicUrl(settings.public_url)

        async def on_inbound(channel_id: str, messages: Sequence[InboundMessage]) -> None:
            # Provider messages take the webhook's path: sessions, dedupe, events.
            channel = channels.get(channel_id)
            kind = channel.contact_type if channel is not None else ""
            received = tuple(from_provider(channel_id, kind, m) for m in messages)
            await store.receive_inbound(DEFAULT_TENANT, InboundBatch(messages=received))

        add_callback_routes(
            app,
            channel_adapters,
            public_url=public.get,
            on_receipt=dispatcher.on_receipt,
            on_inbound=on_inbound,
        )

        async def healthz(_request: web.Request) -> web.Response:
            if health_flag.serving:
                return web.json_response({"status": "SERVING"})
            return web.json_response({"status": "NOT_SERVING"}, status=503)

        app.router.add_get("/healthz", healthz)
        # Last: the document describes every route added above.
        add_docs_routes(app, route_table(app))
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.http_port)
        await site.start()
        http_port = _bound_port(site)
        public.default(f"http://{local_host}:{http_port}")

        http = OutboundHttp(policy=outbound_policy)
        ctx = AdapterContext(
            public_url=public.get(), fetcher=http, adapter_for=channel_adapters.get
        )
        for channel in settings.channels:
            channel_adapters[channel.channel_id] = build_adapter(
                channel, ctx, sandbox_delay=settings.sandbox_delivery_delay
            )
        runtime_channels.context = ctx
        for channel_id in channel_owners:
            try:
                channel_adapters[channel_id] = runtime_channels.build(channels[channel_id])
            except ValueError:
                # One bad stored channel must not keep the others from serving.
                log.exception("stored channel %s has no usable adapter", channel_id)
        # Tests replace the adapters of some channels and keep the rest.
        channel_adapters.update(adapters or {})
        await dispatcher.start()
        webhook_sender = WebhookSender(
            store,
            http,
            retry=RetryPolicy(settings.webhook_retry_base_ms, settings.retry_cap_ms),
            max_age_ms=settings.webhook_max_age_ms,
            clock=clock,
        )
        await webhook_sender.start()
        wake_webhooks.append(webhook_sender.wake)
        # -- session inactivity: closes sessions whose customer went quiet --
        sweeper = InactivitySweeper(
            store,
            timeout_ms=settings.session_inactivity_ms,
            interval=settings.session_sweep_interval,
        )
        sweeper.start()
        housekeeper = Housekeeper(store, event_retention_ms=settings.event_retention_ms)
        housekeeper.start()
        hub = cls(
            settings=settings,
            bus=bus,
            store=store,
            dispatcher=dispatcher,
            webhook_sender=webhook_sender,
            housekeeper=housekeeper,
            http=http,
            adapters=channel_adapters,
            grpc_server=built,
            gateway_channel=gateway_channel,
            http_runner=runner,
            http_port=http_port,
            health=health_flag,
            sweeper=sweeper,
            pacing=pacing,
            auth=auth,
        )
        log.info(
            "serving gRPC on %s:%d and HTTP on %s:%d",
            settings.host,
            built.port,
            settings.host,
            http_port,
        )
        return hub

    async def stop(self, grace: float | None = None) -> None:
        grace = self.settings.shutdown_grace if grace is None else grace
        self.health.serving = False
        await set_serving(self.grpc_server.health, False)
        # Streams end with UNAVAILABLE now instead of being cut at the end of the grace period.
        self.bus.shutdown()
        await self.http_runner.cleanup()
        await self.grpc_server.server.stop(grace)
        await self.gateway_channel.close()
        await self.housekeeper.close()
        if self.sweeper is not None:
            await self.sweeper.close()
        await self.dispatcher.close()
        await self.webhook_sender.close()
        await self.http.close()
        await self.store.close()
        # After the store: its last commits are still fanned out.
        await self.bus.close()
        if self.pacing is not None:
            await self.pacing.close()


def _authenticator(settings: Settings, store: SqlStore) -> Authenticator:
    keys = {app: decode_jwt_secret(secret) or b"" for app, secret in settings.jwt_secrets}
    rules = TokenRules(keys, settings.jwt_max_age_s, settings.jwt_leeway_s)
    return Authenticator(store, rules, cache_ttl_s=settings.key_cache_ttl_s)


def _event_bus(settings: Settings) -> EventBus:
    if not settings.redis_url:
        return InProcessBus()
    return RedisBus(RedisBusConfig(settings.redis_url, max_len=settings.redis_stream_max_len))


def _bound_port(site: web.TCPSite) -> int:
    server = site._server  # aiohttp exposes the bound socket only here
    sockets = getattr(server, "sockets", None)
    assert sockets
    return int(sockets[0].getsockname()[1])
