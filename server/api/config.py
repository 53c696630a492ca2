"""ConfigService: channels, the tenant webhook, global variables and templates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import grpc
from google.protobuf import struct_pb2

from cim.v1 import config_service_pb2 as pb
from cim.v1 import config_service_pb2_grpc as pb_grpc
from server.actions.channels import TenantChannels
from server.api import field_rules
from server.api.config_views import (
    STATUS_NAMES,
    channel_from_proto,
    channel_to_proto,
    check_webhook_url,
    template_from_proto,
    template_to_proto,
    var_to_proto,
)
from server.api.context import tenant_of
from server.channels import ChannelRegistry
from server.domain.customer import GlobalVar, TemplateRecord, check_var, effective_vars
from server.domain.errors import (
    FieldViolation,
    invalid,
)
from server.domain.models import Channel
from server.domain.paging import GLOBAL_VARS, TEMPLATES, page_of

T = TypeVar("T")


class ConfigStore(Protocol):
    """A tenant's stored channels, webhook, global variables and templates."""

    async def insert_channel(self, tenant_id: str, channel: Channel) -> Channel: ...

    async def replace_channel(self, tenant_id: str, channel: Channel) -> Channel: ...

    async def delete_channel(self, tenant_id: str, channel_id: str) -> None: ...

    async def set_tenant_webhook(self, tenant_id: str, url: str) -> str: ...

    async def list_global_vars(self, tenant_id: str, channel_id: str = "") -> list[GlobalVar]: ...

    async def set_global_var(self, tenant_id: str, var: GlobalVar) -> GlobalVar: ...

    async def delete_global_var(self, tenant_id: str, key: str, channel_id: str) -> None: ...

    async def list_templates(
        self, tenant_id: str, *, channel_id: str = "", status: str = ""
    ) -> list[TemplateRecord]: ...

    async def insert_template(self, tenant_id: str, t: TemplateRecord) -> TemplateRecord: ...

    async def replace_template(self, tenant_id: str, t: TemplateRecord) -> TemplateRecord: ...

    async def delete_template(self, tenant_id: str, template_id: str) -> None: ...


class ConfigServicer(pb_grpc.ConfigServiceServicer):
    def __init__(
        self,
        channels: ChannelRegistry,
        store: ConfigStore,
        *,
        url_check: Callable[[str], str | None] | None = None,
        channels_changed: Callable[[], None] | None = None,
    ) -> None:
        # Refuses webhook URLs and tenant channel endpoints the outbound guard
        # would refuse, at submit time.
        self._url_check = url_check or (lambda _url: None)
        # Tells the other replicas once a channel change is stored.
        self._channels_changed = channels_changed or (lambda: None)
        self._channels = channels
        self._store = store
        self._tenant_channels = TenantChannels(
            channels, store, url_check=self._url_check, changed=self._channels_changed
        )

    # -- channels -----------------------------------------------------------
    async def ListChannels(
        self, request: pb.ListChannelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListChannelsResponse:
        with_sandbox = request.sandbox or request.sabdnox
        tenant = tenant_of(context)
        return pb.ListChannelsResponse(
            results=[
                channel_to_proto(e)
                for e in self._channels.entries()
                if (with_sandbox or not e.channel.sandbox) and e.visible_to(tenant)
            ]
        )

    async def GetChannel(
        self, request: pb.GetChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetChannelResponse:
        entry = self._tenant_channels.visible(tenant_of(context), request.channel_id)
        return pb.GetChannelResponse(channel=channel_to_proto(entry))

    async def CreateChannel(
        self, request: pb.CreateChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateChannelResponse:
        entry = await self._tenant_channels.create(
            tenant_of(context), channel_from_proto(request.channel)
        )
        return pb.CreateChannelResponse(channel=channel_to_proto(entry))

    async def UpdateChannel(
        self, request: pb.UpdateChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateChannelResponse:
        entry = await self._tenant_channels.update(
            tenant_of(context), channel_from_proto(request.channel)
        )
        return pb.UpdateChannelResponse(channel=channel_to_proto(entry))

    async def DeleteChannel(
        self, request: pb.DeleteChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteChannelResponse:
        await self._tenant_channels.delete(tenant_of(context), request.channel_id)
        return pb.DeleteChannelResponse()

    # -- webhook ------------------------------------------------------------
    async def SetWebhook(
        self, request: pb.SetWebhookRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetWebhookResponse:
        # An empty URL (the public API's own example) turns webhook delivery off.
        field_rules.check(request)
        if request.url:
            check_webhook_url(request.url)
            refusal = self._url_check(request.url)
            if refusal:
                raise invalid([FieldViolation("url", refusal)])
        tenant = tenant_of(context)
        secret = await self._store.set_tenant_webhook(tenant, request.url)
        reply = pb.SetWebhookResponse(
            id=tenant,
            webhook=request.url,
            type="WEBHOOK",
            app_mode="WEBHOOK",
            key_name=tenant,
            config=struct_pb2.Struct(),
            props=struct_pb2.Struct(),
        )
        # The tenant needs the secret to verify our signatures; it is theirs to see.
        reply.secret.update({"signingSecret": secret})
        return reply

    # -- global variables ---------------------------------------------------
    async def ListGlobalVars(
        self, request: pb.ListGlobalVarsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListGlobalVarsResponse:
        tenant = tenant_of(context)
        wanted = GLOBAL_VARS.request(
            tenant, request.page_size, request.page_token, channel_id=request.channel_id
        )
        stored = await self._store.list_global_vars(tenant, request.channel_id)
        if request.channel_id:
            shown = sorted(effective_vars(stored, request.channel_id).values(), key=_var_key)
        else:
            shown = stored
        page = page_of(shown, _var_id, wanted)
        return pb.ListGlobalVarsResponse(
            results=[var_to_proto(v) for v in page.items], next_page_token=page.next_token
        )

    async def SetGlobalVar(
        self, request: pb.SetGlobalVarRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetGlobalVarResponse:
        tenant = tenant_of(context)
        problems = check_var(request.key, request.value)
        if request.channel_id and not self._channels.is_visible(tenant, request.channel_id):
            problems.append(FieldViolation("channelId", f"unknown channel {request.channel_id!r}"))
        field_rules.check(request, problems)
        stored = await self._store.set_global_var(
            tenant,
            GlobalVar(request.key, request.value, request.description, request.channel_id),
        )
        return pb.SetGlobalVarResponse(global_var=var_to_proto(stored))

    async def DeleteGlobalVar(
        self, request: pb.DeleteGlobalVarRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteGlobalVarResponse:
        await self._store.delete_global_var(tenant_of(context), request.key, request.channel_id)
        return pb.DeleteGlobalVarResponse()

    # -- templates ----------------------------------------------------------
    async def ListTemplates(
        self, request: pb.ListTemplatesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTemplatesResponse:
        tenant = tenant_of(context)
        status = STATUS_NAMES.get(request.channel_status, "")
        wanted = TEMPLATES.request(
            tenant,
            request.page_size,
            request.page_token,
            channel_id=request.channel_id,
            status=status,
        )
        found = await self._store.list_templates(
            tenant, channel_id=request.channel_id, status=status
        )
        page = page_of(found, _template_id, wanted)
        return pb.ListTemplatesResponse(
            results=[template_to_proto(t) for t in page.items], next_page_token=page.next_token
        )

    async def CreateTemplate(
        self, request: pb.CreateTemplateRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTemplateResponse:
        record = template_from_proto(request.template)
        created = await self._store.insert_template(tenant_of(context), record)
        return pb.CreateTemplateResponse(template=template_to_proto(created))

    async def UpdateTemplate(
        self, request: pb.UpdateTemplateRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateTemplateResponse:
        if not request.template.id:
            raise invalid([FieldViolation("template.id", "required")])
        record = template_from_proto(request.template, request.template.id)
        updated = await self._store.replace_template(tenant_of(context), record)
        return pb.UpdateTemplateResponse(template=template_to_proto(updated))

    async def DeleteTemplate(
        self, request: pb.DeleteTemplateRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteTemplateResponse:
        await self._store.delete_template(tenant_of(context), request.template_id)
        return pb.DeleteTemplateResponse()


def _var_key(v: GlobalVar) -> str:
    return v.key


def _var_id(v: GlobalVar) -> str:
    return f"{v.channel_id}:{v.key}"


def _template_id(t: TemplateRecord) -> str:
    return t.id
