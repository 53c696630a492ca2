"""The hub: every part started in order, each one's stop pushed to unwind in reverse."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace

import grpc
from aiohttp import web

from adapters.base import AdapterContext
from adapters.registry import build_adapter
from server.actions.consent import ConsentRules
from server.api.auth import Authenticator
from server.api.bootstrap import bootstrap_keys
from server.api.local_channel import LocalChannel
from server.api.metrics import new_gateway_mark
from server.api.readiness import Readiness
from server.api.server import BuiltServer, set_ready, set_serving
from server.app import serving
from server.app.database import open_store
from server.app.serving import PublicUrl, UrlChecks
from server.channels import ChannelRegistry
from server.config import Settings
from server.dispatch.channel_sync import ChannelSync
from server.dispatch.dispatcher import Dispatcher
from server.dispatch.fallback import FallbackSweeper
from server.dispatch.housekeeping import Housekeeper
from server.dispatch.receipt_timeouts import ReceiptTimeoutSweeper
from server.dispatch.receipts import record_receipt
from server.dispatch.redis_pacing import SharedPacing
from server.dispatch.session_sweeper import InactivitySweeper
from server.domain.events import CommittedEvents
from server.domain.models import Channel, Delivery, Receipt
from server.domain.provider import ChannelAdapter
from server.domain.retry import RetryPolicy
from server.events.bus import EventBus, InProcessBus
from server.events.channel_notices import RedisChannelNotices
from server.events.redis_bus import RedisBus, RedisBusConfig
from server.gateway.metrics import metrics_app
from server.net.addresses import AddressPolicy, address_refusal, url_refusal
from server.net.http import OutboundHttp
from server.observability.metrics import HubMetrics
from server.storage.receipt_timeouts import ReceiptRules
from server.storage.store import SqlStore
from server.storage.tx import now_ms
from server.webhooks.sender import WebhookSender

log = logging.getLogger(__name__)


@dataclass
class Lifecycle:
    """What a stop decides and the parts' own stop steps read."""

    grace: float
    serving: bool = True


@dataclass
class Hub:
    settings: Settings
    store: SqlStore
    bus: EventBus
    channels: ChannelRegistry
    dispatcher: Dispatcher
    housekeeper: Housekeeper
    grpc_server: BuiltServer
    http_runner: web.AppRunner
    http_port: int
    auth: Authenticator
    lifecycle: Lifecycle
    # Unwinds every resource in the reverse order of its start.
    resources: AsyncExitStack
    # None when metrics are switched off.
    metrics: HubMetrics | None = None
    # The separate /metrics listener's port, when one was asked for.
    metrics_port: int | None = None

    @property
    def grpc_port(self) -> int:
        return self.grpc_server.port

    async def revoke_key(self, api_id: str) -> bool:
        """Revoke a key; this server refuses it from the next call on."""
        revoked = await self.store.keys.revoke_api_key(api_id)
        self.auth.forget(api_id)
        return revoked

    @classmethod
    async def start(
        cls,
        settings: Settings,
        adapters: dict[str, ChannelAdapter] | None = None,
        clock: Callable[[], int] = now_ms,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> Hub:
        """clock stamps what is stored; monotonic (seconds) times the key cache."""
        resources = AsyncExitStack()
        try:
            return await _assemble(cls, resources, settings, adapters or {}, clock, monotonic)
        except BaseException:
            await resources.aclose()
            raise

    async def stop(self, grace: float | None = None) -> None:
        self.lifecycle.grace = self.settings.shutdown_grace if grace is None else grace
        await self.resources.aclose()


async def _assemble(
    cls: type[Hub],
    resources: AsyncExitStack,
    settings: Settings,
    adapters: dict[str, ChannelAdapter],
    clock: Callable[[], int],
    monotonic: Callable[[], float],
) -> Hub:
    """Start every part, each one's stop pushed onto `resources` as soon as it runs."""
    bus = _event_bus(settings)
    await bus.start()
    # Last to close: the store's final commits are still fanned out.
    resources.push_async_callback(bus.close)
    pacing = SharedPacing(settings.redis_url) if settings.redis_url else None
    if pacing is not None:
        resources.push_async_callback(pacing.close)
    wake_webhooks: list[Callable[[], None]] = []

    def publish(events: CommittedEvents) -> None:
        bus.publish(events)
        # Most commits queue no webhook, and a sender woken for nothing still
        # reads the outbox: a round trip a commit on PostgreSQL.
        if events.webhooks:
            for wake in wake_webhooks:
                wake()

    metrics = HubMetrics(clock_ms=clock) if settings.metrics_enabled else None
    store = await open_store(settings, publish, clock=clock, observer=metrics)
    resources.push_async_callback(store.close)
    if metrics is not None:
        metrics.watch_outbox(store.outbox.outbox_stats)
    await bootstrap_keys(settings, store.keys)
    auth = serving.authenticator(settings, store.keys, monotonic)
    outbound_policy = AddressPolicy.of(settings.outbound_allow, https_only=settings.production)

    def url_check(url: str) -> str | None:
        return url_refusal(outbound_policy, url)

    def media_check(url: str) -> str | None:
        return address_refusal(outbound_policy, url)

    http = OutboundHttp(policy=outbound_policy)
    resources.push_async_callback(http.close)

    async def on_receipt(channel_id: str, receipt: Receipt) -> None:
        await record_receipt(store.outbox, channel_id, receipt)

    channels = ChannelRegistry(on_receipt)
    # Adapters close once nothing sends through them any more.
    resources.push_async_callback(channels.close)

    webhook_sender = WebhookSender(
        store.webhooks,
        http,
        retry=RetryPolicy(settings.webhook_retry_base_ms, settings.retry_cap_ms),
        max_age_ms=settings.webhook_max_age_ms,
        disable_after_ms=settings.webhook_disable_after_ms,
        poll_interval=settings.dispatch_poll_interval,
        clock=clock,
        observer=metrics,
    )
    # An "api" process leaves sending, webhooks and sweeps to "dispatcher"
    # processes, which find the work in the database.
    background = settings.runs_background_work
    if background:
        await webhook_sender.start()
        resources.push_async_callback(webhook_sender.close)
    wake_webhooks.append(webhook_sender.wake)

    sweeper = InactivitySweeper(
        store.sessions,
        timeout_ms=settings.session_inactivity_ms,
        interval=settings.session_sweep_interval,
    )
    if background:
        sweeper.start()
        resources.push_async_callback(sweeper.close)
    receipt_rules = ReceiptRules(
        timeout_ms=settings.receipt_timeout_ms,
        query_interval_ms=settings.receipt_query_interval_ms,
        query_limit=settings.receipt_query_limit,
        query_ceiling_ms=settings.receipt_query_ceiling_ms,
    )
    receipt_sweeper = ReceiptTimeoutSweeper(
        store.outbox, channels, receipt_rules, interval=settings.receipt_sweep_interval
    )
    housekeeper = Housekeeper(store.retention, event_retention_ms=settings.event_retention_ms)
    if background:
        receipt_sweeper.start()
        resources.push_async_callback(receipt_sweeper.close)
        housekeeper.start()
        resources.push_async_callback(housekeeper.close)

    public = PublicUrl(settings.public_url)
    # The dispatcher wakes for confirmation replies; it reports provider opt-outs.
    wake_dispatcher: list[Callable[[], None]] = []

    def replies_queued() -> None:
        for wake in wake_dispatcher:
            wake()

    consent = ConsentRules(
        channels,
        replies_queued,
        ledger=store.consents,
        inbox=store.sessions,
        replies=store.messages,
        secrets=store.webhooks,
        public_url=public.get,
    )

    async def on_opted_out(delivery: Delivery, code: str) -> None:
        await consent.provider_opt_out(
            delivery.tenant_id,
            delivery.channel_id,
            delivery.destination,
            delivery.message_id,
            code,
        )

    dispatcher = Dispatcher(
        store.outbox,
        channels,
        lease_ms=settings.dispatch_lease_ms,
        retry=RetryPolicy(
            settings.retry_base_ms, settings.retry_cap_ms, settings.retry_max_attempts
        ),
        poll_interval=settings.dispatch_poll_interval,
        clock=clock,
        workers=settings.dispatch_workers,
        # With Redis, a channel's TPS holds across replicas, not per replica.
        pacer_for=pacing.pacer_for if pacing is not None else None,
        observer=metrics,
        on_opted_out=on_opted_out,
    )
    wake_dispatcher.append(dispatcher.wake)
    fallback_sweeper = FallbackSweeper(
        store.outbox,
        wake_dispatcher=dispatcher.wake,
        interval=settings.fallback_sweep_interval,
        clock=clock,
    )
    if background:
        fallback_sweeper.start()
        resources.push_async_callback(fallback_sweeper.close)
    channel_sync = ChannelSync(
        store.config,
        channels,
        settings.channels,
        interval=settings.channel_sync_interval,
        notices=RedisChannelNotices(settings.redis_url) if settings.redis_url else None,
    )
    checks = UrlChecks(url_check, media_check)
    # The façade's calls carry this, so the metrics count them once, as REST.
    mark = new_gateway_mark() if metrics is not None else None
    built = serving.grpc_server(
        settings,
        store,
        bus,
        channels,
        dispatcher,
        channel_sync,
        auth,
        checks,
        clock,
        metrics,
        mark,
        webhook_sender.wake,
        consent,
    )
    await built.server.start()
    # The facade's unary calls run in this process through the server's own
    # handlers and interceptor chain; its streams use a real channel.
    local_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    gateway_channel = LocalChannel(
        built.handlers,
        built.interceptors,
        grpc.aio.insecure_channel(f"{local_host}:{built.port}"),
        mark,
    )
    resources.push_async_callback(gateway_channel.close)
    lifecycle = Lifecycle(grace=settings.shutdown_grace)

    async def stop_grpc() -> None:
        await built.server.stop(lifecycle.grace)

    resources.push_async_callback(stop_grpc)
    await set_serving(built.health, True)

    async def readiness_changed(ready: bool) -> None:
        if lifecycle.serving:  # a stopping server stays NOT_SERVING
            await set_ready(built.health, ready)

    readiness = Readiness(store.ping, readiness_changed)
    readiness.start()
    resources.push_async_callback(readiness.close)

    app = serving.http_app(
        settings,
        gateway_channel,
        channels,
        public,
        lambda: lifecycle.serving,
        readiness,
        metrics,
        consent,
    )
    runner, http_port = await serving.listen(resources, app, settings.host, settings.http_port)
    metrics_port = None
    if metrics is not None and settings.metrics_port is not None:
        listener = metrics_app(metrics, settings.metrics_token)
        _, metrics_port = await serving.listen(
            resources, listener, settings.host, settings.metrics_port
        )
        log.info("serving /metrics on %s:%d", settings.host, metrics_port)
    public.default(f"http://{local_host}:{http_port}")

    # Adapters are built once the callback URL is known.
    ctx = AdapterContext(public_url=public.get(), fetcher=http)

    def build(channel: Channel, owner: str | None) -> ChannelAdapter:
        return build_adapter(
            channel,
            replace(ctx, adapter_for=channels.adapters_for(owner)),
            sandbox_delay=settings.sandbox_delivery_delay,
            tenant_owned=owner is not None,
        )

    channels.bind(build)
    # The operator's channels, then the tenants' as stored by every replica.
    for channel in settings.channels:
        await channels.load(channel, None)
    await channel_sync.start()
    resources.push_async_callback(channel_sync.close)
    # Tests replace the adapters of some channels and keep the rest.
    for channel_id, adapter in adapters.items():
        await channels.use_adapter(channel_id, adapter)
    if background:
        await dispatcher.start()
        resources.push_async_callback(dispatcher.close)

    async def going_down() -> None:
        # First of all: health checks fail, and streams end with UNAVAILABLE
        # now instead of being cut at the end of the grace period.
        lifecycle.serving = False
        await set_serving(built.health, False)
        bus.shutdown()

    resources.push_async_callback(going_down)
    log.info(
        "serving gRPC on %s:%d and HTTP on %s:%d (role %s)",
        settings.host,
        built.port,
        settings.host,
        http_port,
        settings.role,
    )
    return cls(
        settings=settings,
        store=store,
        bus=bus,
        channels=channels,
        dispatcher=dispatcher,
        housekeeper=housekeeper,
        grpc_server=built,
        http_runner=runner,
        http_port=http_port,
        auth=auth,
        lifecycle=lifecycle,
        resources=resources,
        metrics=metrics,
        metrics_port=metrics_port,
    )


def _event_bus(settings: Settings) -> EventBus:
    if not settings.redis_url:
        return InProcessBus()
    return RedisBus(RedisBusConfig(settings.redis_url, max_len=settings.redis_stream_max_len))
