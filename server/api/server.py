"""build_server: the grpc.aio server with every service, health and reflection."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cim.v1 import (
    config_service_pb2,
    config_service_pb2_grpc,
    consent_service_pb2,
    consent_service_pb2_grpc,
    customer_service_pb2,
    customer_service_pb2_grpc,
    messaging_service_pb2,
    messaging_service_pb2_grpc,
    notification_service_pb2,
    notification_service_pb2_grpc,
    session_service_pb2,
    session_service_pb2_grpc,
    webhook_service_pb2,
    webhook_service_pb2_grpc,
)
from server.api.config import ConfigServicer
from server.api.consents import ConsentServicer
from server.api.customers import CustomerServicer
from server.api.errors import ErrorInterceptor
from server.api.field_guard import FieldGuard
from server.api.handlers import ResolvedChain
from server.api.local_channel import HandlerRecorder
from server.api.malformed import MalformedRequestInterceptor
from server.api.messaging import MessagingServicer
from server.api.notifications import NotificationServicer
from server.api.sessions import SessionServicer
from server.api.tracing import TracingInterceptor
from server.api.webhooks import WebhookServicer

SERVICE_NAMES = (
    messaging_service_pb2.DESCRIPTOR.services_by_name["MessagingService"].full_name,
    notification_service_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name,
    session_service_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name,
    config_service_pb2.DESCRIPTOR.services_by_name["ConfigService"].full_name,
    customer_service_pb2.DESCRIPTOR.services_by_name["CustomerService"].full_name,
    webhook_service_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name,
    consent_service_pb2.DESCRIPTOR.services_by_name["ConsentService"].full_name,
)


@dataclass(frozen=True)
class Services:
    messaging: MessagingServicer
    notifications: NotificationServicer
    sessions: SessionServicer
    config: ConfigServicer
    customers: CustomerServicer | None = None
    webhooks: WebhookServicer | None = None
    consents: ConsentServicer | None = None


@dataclass(frozen=True)
class BuiltServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    # What LocalChannel needs to run a call as this server would.
    handlers: Mapping[str, grpc.RpcMethodHandler]
    interceptors: tuple[grpc.aio.ServerInterceptor, ...]


# gRPC's hard limit for request headers (credentials included): past it a call
# is RESOURCE_EXHAUSTED before any interceptor runs.
MAX_METADATA_BYTES = 16 << 10


def build_server(
    services: Services,
    *,
    address: str = "127.0.0.1:0",
    max_message_bytes: int = 4 << 20,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    outermost: Sequence[grpc.aio.ServerInterceptor] = (),
    url_check: Callable[[str], str | None] | None = None,
) -> BuiltServer:
    # `outermost` (the metrics) sees every call, refused or not; then every
    # call is a span and a log line, whatever becomes of it. Undecodable bytes
    # are refused before any other interceptor sees the call. The field guard
    # sits inside the error interceptor, which turns its refusals into
    # INVALID_ARGUMENT.
    chain = (
        *outermost,
        TracingInterceptor(),
        MalformedRequestInterceptor(),
        *interceptors,
        ErrorInterceptor(),
        FieldGuard(services.messaging.verify_webhook, url_check),
    )
    server = grpc.aio.server(
        interceptors=[ResolvedChain(chain)],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # gRPC refuses headers between its soft and hard metadata limits at
            # random; one limit makes the same request get the same answer.
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        ],
    )
    recorder: Any = HandlerRecorder(server)
    messaging_service_pb2_grpc.add_MessagingServiceServicer_to_server(services.messaging, recorder)
    notification_service_pb2_grpc.add_NotificationServiceServicer_to_server(
        services.notifications, recorder
    )
    session_service_pb2_grpc.add_SessionServiceServicer_to_server(services.sessions, recorder)
    config_service_pb2_grpc.add_ConfigServiceServicer_to_server(services.config, recorder)
    if services.customers is not None:
        customer_service_pb2_grpc.add_CustomerServiceServicer_to_server(
            services.customers, recorder
        )
    if services.webhooks is not None:
        webhook_service_pb2_grpc.add_WebhookServiceServicer_to_server(services.webhooks, recorder)
    if services.consents is not None:
        consent_service_pb2_grpc.add_ConsentServiceServicer_to_server(services.consents, recorder)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            *SERVICE_NAMES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(address)
    return BuiltServer(server, port, health_servicer, recorder.handlers, (ResolvedChain(chain),))


async def set_serving(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    await health_servicer.set("", status)
    for name in SERVICE_NAMES:
        await health_servicer.set(name, status)


async def set_ready(health_servicer: health.aio.HealthServicer, ready: bool) -> None:
    """Readiness: the API services' entries; the process's own ("") is liveness."""
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if ready
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in SERVICE_NAMES:
        await health_servicer.set(name, status)
