"""ConfigService."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

import grpc

from cim.v1 import config_service_pb2 as pb
from cim.v1 import config_service_pb2_grpc as pb_grpc
from server.api.context import tenant_of
from server.domain.errors import FieldViolation, invalid
from server.domain.models import Channel
from server.storage.store import SqlStore


def channel_to_proto(c: Channel) -> pb.Channel:
    return pb.Channel(
        channel_id=c.channel_id,
        contact_type=c.contact_type,
        lane=c.lane,
        name=c.name,
        provider=c.provider,
        sandbox=c.sandbox,
        tps=c.tps,
    )


def check_webhook_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid([FieldViolation("url", "must be an absolute http(s) URL")])


class ConfigServicer(pb_grpc.ConfigServiceServicer):
    def __init__(self, channels: Mapping[str, Channel], store: SqlStore) -> None:
        self._channels = channels
        self._store = store

    async def SetWebhook(
        self, request: pb.SetWebhookRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetWebhookResponse:
        check_webhook_url(request.url)
        tenant = tenant_of(context)
        secret = await self._store.set_tenant_webhook(tenant, request.url)
        reply = pb.SetWebhookResponse(
            id=tenant, webhook=request.url, type="WEBHOOK", app_mode="WEBHOOK"
        )
        # The tenant needs the secret to verify our signatures; it is theirs to see.
        reply.secret.update({"signingSecret": secret})
        return reply

    async def ListChannels(
        self, request: pb.ListChannelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListChannelsResponse:
        with_sandbox = request.sandbox or request.sabdnox
        return pb.ListChannelsResponse(
            results=[
                channel_to_proto(c)
                for c in self._channels.values()
                if with_sandbox or not c.sandbox
            ]
        )
