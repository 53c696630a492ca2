"""What the hub serves: the gRPC services behind their interceptors, and the HTTP app.

Each servicer is handed the part of the store its port asks for; mypy checks
every one of these calls against the servicer's protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial

import grpc
from aiohttp import web

from server.actions.batch_send import BatchSources
from server.actions.consent import ConsentRules
from server.actions.provider_inbound import receive_from_provider
from server.api.auth import Authenticator
from server.api.config import ConfigServicer
from server.api.consents import ConsentServicer
from server.api.customers import CustomerServicer
from server.api.guard import GuardInterceptor
from server.api.inbound import InboundApi
from server.api.limits import RateLimiter, StreamCounter
from server.api.messaging import MessagingServicer
from server.api.metrics import MetricsInterceptor
from server.api.notifications import NotificationServicer
from server.api.readiness import Readiness
from server.api.server import BuiltServer, Services, build_server
from server.api.sessions import SessionServicer
from server.api.tokens import TokenRules
from server.api.webhooks import WebhookServicer
from server.channels import ChannelRegistry
from server.config import Settings, decode_jwt_secret
from server.dispatch.channel_sync import ChannelSync
from server.dispatch.dispatcher import Dispatcher
from server.events.bus import EventBus
from server.gateway.app import HTTP_LIMITS, AccessLog, create_app, route_table
from server.gateway.callbacks import add_callback_routes
from server.gateway.docs import add_docs_routes
from server.gateway.health import add_health_routes
from server.gateway.metrics import add_metrics_route, request_middleware
from server.gateway.protocol_log import ProtocolLogger
from server.gateway.unsubscribe import add_unsubscribe_routes
from server.observability.metrics import HubMetrics
from server.storage.key_rows import KeyRows
from server.storage.store import SqlStore


@dataclass(frozen=True)
class UrlChecks:
    """The outbound guard's verdicts at submit time: why a URL is refused, or None."""

    # URLs the hub itself will call (notifyUrl, webhooks, tenant channel endpoints).
    submitted: Callable[[str], str | None]
    # Media URLs, judged on their address alone: a message may never fetch them.
    media: Callable[[str], str | None]


@dataclass
class PublicUrl:
    """Where providers reach our callbacks; defaults to the bound HTTP address."""

    configured: str = ""
    fallback: str = ""

    def default(self, url: str) -> None:
        self.fallback = url

    def get(self) -> str:
        return self.configured or self.fallback


def grpc_server(
    settings: Settings,
    store: SqlStore,
    bus: EventBus,
    channels: ChannelRegistry,
    dispatcher: Dispatcher,
    channel_sync: ChannelSync,
    auth: Authenticator,
    checks: UrlChecks,
    clock: Callable[[], int],
    metrics: HubMetrics | None,
    mark: tuple[str, str] | None,
    wake_webhooks: Callable[[], None],
    consent: ConsentRules,
) -> BuiltServer:
    # One budget per tenant: the guard spends it, GetQuota reports it.
    limiter = RateLimiter(settings.rate_per_s, settings.rate_burst)
    return build_server(
        Services(
            messaging=MessagingServicer(
                store.messages,
                channels,
                dispatcher.wake,
                clock,
                sources=BatchSources(templates=store.config, languages=store.customers),
                inbound=InboundApi(store.customers, channels, settings.verify_token, consent),
                url_check=checks.submitted,
                budget=limiter,
                load=dispatcher,
                consent=consent,
            ),
            notifications=NotificationServicer(
                store.events,
                bus,
                conversations=store.sessions,
                heartbeat_seconds=settings.heartbeat_seconds,
                buffer_limit=settings.subscriber_buffer,
                stall_seconds=settings.subscriber_stall_seconds,
            ),
            sessions=SessionServicer(store.sessions),
            config=ConfigServicer(
                channels,
                store.config,
                url_check=checks.submitted,
                channels_changed=channel_sync.changed_here,
            ),
            customers=CustomerServicer(store.customers),
            webhooks=WebhookServicer(store.webhooks, on_redrive=wake_webhooks),
            consents=ConsentServicer(store.consents, consent),
        ),
        address=f"{settings.host}:{settings.grpc_port}",
        max_message_bytes=settings.max_grpc_message_bytes,
        # Media URLs at internal addresses are refused when submitted, not only when fetched.
        url_check=checks.media,
        interceptors=[
            GuardInterceptor(
                auth,
                limiter,
                StreamCounter(settings.max_streams_per_tenant),
                settings.max_streams_per_tenant,
                verify_token=settings.verify_token,
                on_limited=metrics.rate_limited if metrics is not None else None,
            )
        ],
        outermost=[MetricsInterceptor(metrics, mark)] if metrics and mark else [],
    )


def http_app(
    settings: Settings,
    gateway_channel: grpc.aio.Channel,
    channels: ChannelRegistry,
    public: PublicUrl,
    serving: Callable[[], bool],
    readiness: Readiness,
    metrics: HubMetrics | None,
    consent: ConsentRules,
) -> web.Application:
    app = create_app(
        gateway_channel,
        max_body_bytes=settings.max_body_bytes,
        outer_middlewares=[request_middleware(metrics)] if metrics is not None else [],
    )

    add_callback_routes(
        app,
        channels.adapter,
        public_url=public.get,
        on_receipt=channels.on_receipt,
        on_inbound=partial(receive_from_provider, channels, consent),
    )

    add_unsubscribe_routes(app, consent.one_click)
    add_health_routes(app, serving, readiness)
    if metrics is not None:
        add_metrics_route(app, metrics, settings.metrics_token)
    # Last: the document describes every route added above.
    add_docs_routes(app, route_table(app))
    return app


def authenticator(
    settings: Settings, key_rows: KeyRows, monotonic: Callable[[], float]
) -> Authenticator:
    keys = {app: decode_jwt_secret(secret) or b"" for app, secret in settings.jwt_secrets}
    rules = TokenRules(keys, settings.jwt_max_age_s, settings.jwt_leeway_s)
    return Authenticator(key_rows, rules, cache_ttl_s=settings.key_cache_ttl_s, clock=monotonic)


async def listen(
    resources: AsyncExitStack, app: web.Application, host: str, port: int
) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log_class=AccessLog,
        logger=ProtocolLogger(),
        **HTTP_LIMITS,
    )
    await runner.setup()
    resources.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, _bound_port(site)


def _bound_port(site: web.TCPSite) -> int:
    server = site._server  # aiohttp exposes the bound socket only here
    sockets = getattr(server, "sockets", None)
    assert sockets
    return int(sockets[0].getsockname()[1])
