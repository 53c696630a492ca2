"""ConfigService."""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from cim.v1 import config_service_pb2 as pb
from cim.v1 import config_service_pb2_grpc as pb_grpc
from server.domain.models import Channel


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


class ConfigServicer(pb_grpc.ConfigServiceServicer):
    def __init__(self, channels: Mapping[str, Channel]) -> None:
        self._channels = channels

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
