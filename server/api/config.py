"""ConfigService: channels, the tenant webhook, global variables and templates."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict

from adapters.policy import tenant_settings_violations
from cim.v1 import config_service_pb2 as pb
from cim.v1 import config_service_pb2_grpc as pb_grpc
from server.api import field_rules
from server.api.context import tenant_of
from server.channels import ChannelEntry, ChannelRegistry
from server.domain.customer import (
    GlobalVar,
    TemplateRecord,
    check_template,
    check_var,
    effective_vars,
)
from server.domain.errors import (
    FieldViolation,
    already_exists,
    failed_precondition,
    invalid,
    not_found,
)
from server.domain.models import Channel
from server.domain.paging import GLOBAL_VARS, TEMPLATES, page_of
from server.storage.store import SqlStore

REDACTED = "***"
_SECRET_WORDS = ("secret", "token", "password", "passwd", "key", "credential", "auth")
_CHANNEL_ID = re.compile(r"^[A-Za-z0-9_.:@+\-]{1,128}$")
_STATUS_NAMES = {
    pb.TEMPLATE_APPROVAL_STATUS_APPROVED: "APPROVED",
    pb.TEMPLATE_APPROVAL_STATUS_PENDING: "PENDING",
    pb.TEMPLATE_APPROVAL_STATUS_REJECTED: "REJECTED",
}
_STATUS_VALUES = {v: k for k, v in _STATUS_NAMES.items()}
_OPERATOR_PROBLEM = "the channel is not serving; the operator's log says why"


def redact(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings with every credential-like value hidden, at any depth."""
    out: dict[str, Any] = {}
    for k, v in settings.items():
        if any(word in k.lower() for word in _SECRET_WORDS):
            out[k] = REDACTED
        elif isinstance(v, Mapping):
            out[k] = redact(v)
        else:
            out[k] = v
    return out


def channel_to_proto(entry: ChannelEntry) -> pb.Channel:
    c = entry.channel
    reply = pb.Channel(
        channel_id=c.channel_id,
        contact_type=c.contact_type,
        lane=c.lane,
        name=c.name,
        provider=c.provider,
        sandbox=c.sandbox,
        tps=c.tps,
        max_in_flight=c.max_in_flight,
        read_only=entry.from_file,
        state=pb.CHANNEL_STATE_SERVING if entry.healthy else pb.CHANNEL_STATE_FAILED,
        state_reason=_state_reason(entry),
    )
    # An operator's settings (internal hosts, server paths, variable names)
    # are no tenant's business; a tenant sees its own, credentials redacted.
    if c.settings and not entry.from_file:
        reply.settings.update(_json_safe(redact(c.settings)))
    return reply


def _state_reason(entry: ChannelEntry) -> str:
    if entry.healthy:
        return ""
    # The diagnosis of an operator's channel may name server files or variables.
    return _OPERATOR_PROBLEM if entry.from_file else entry.problem


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def channel_from_proto(m: pb.Channel) -> Channel:
    problems = []
    if m.channel_id and not _CHANNEL_ID.match(m.channel_id):
        problems.append(FieldViolation("channelId", "1 to 128 letters, digits or _.:@+-"))
    if m.tps < 0:
        problems.append(FieldViolation("tps", "must not be negative"))
    if m.max_in_flight < 0:
        problems.append(FieldViolation("maxInFlight", "must not be negative"))
    settings = MessageToDict(m.settings) if m.HasField("settings") else {}
    if REDACTED in _leaves(settings):
        # A redacted copy sent back must not overwrite the real credential.
        problems.append(FieldViolation("settings", "send credentials in full, not redacted"))
    field_rules.check(m, problems)
    return Channel(
        channel_id=m.channel_id,
        contact_type=m.contact_type.upper(),
        provider=m.provider,
        lane=m.lane,
        name=m.name,
        sandbox=m.sandbox or m.provider == "sandbox",
        tps=m.tps,
        max_in_flight=m.max_in_flight or 64,
        settings=settings,
    )


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def check_webhook_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok or len(url) > 2048:
        raise invalid([FieldViolation("url", "must be an absolute http(s) URL")])


def var_to_proto(v: GlobalVar) -> pb.GlobalVar:
    return pb.GlobalVar(
        id=f"{v.channel_id}:{v.key}" if v.channel_id else v.key,
        key=v.key,
        value=v.value,
        description=v.description,
        channel_id=v.channel_id,
        type="CHANNEL" if v.channel_id else "TENANT",
        updated_stamp=v.updated_at,
    )


def template_to_proto(t: TemplateRecord) -> pb.Template:
    return pb.Template(
        id=t.id,
        code=t.code,
        lang=t.lang,
        category=t.category,
        header=t.header,
        body=t.body,
        footer=t.footer,
        buttons=[
            pb.TemplateButton(
                type=str(b.get("type", "")),
                label=str(b.get("label", "")),
                code=str(b.get("code", "")),
                url=str(b.get("url", "")),
                phone=str(b.get("phone", "")),
            )
            for b in t.buttons
        ],
        approved=[
            pb.TemplateApproval(
                channel_id=channel_id, status=_STATUS_VALUES[status], template_id=t.id
            )
            for channel_id, status in sorted(t.approvals.items())
        ],
        created_stamp=t.created_at,
    )


def template_from_proto(m: pb.Template, template_id: str = "") -> TemplateRecord:
    approvals: dict[str, str] = {}
    problems = []
    for i, a in enumerate(m.approved):
        status = _STATUS_NAMES.get(a.status)
        if status is None:
            problems.append(
                FieldViolation(f"approved[{i}].status", "must be APPROVED, PENDING or REJECTED")
            )
            continue
        approvals[a.channel_id] = status
    field_rules.check(m, problems, check_template(m.code, m.lang, m.body, approvals))
    return TemplateRecord(
        id=template_id,
        code=m.code,
        lang=m.lang,
        body=m.body,
        category=m.category,
        header=m.header,
        footer=m.footer,
        buttons=tuple(
            {"type": b.type, "label": b.label, "code": b.code, "url": b.url, "phone": b.phone}
            for b in m.buttons
        ),
        approvals=approvals,
    )


class ConfigServicer(pb_grpc.ConfigServiceServicer):
    def __init__(
        self,
        channels: ChannelRegistry,
        store: SqlStore,
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

    def _visible(self, tenant: str, channel_id: str) -> ChannelEntry:
        entry = self._channels.get(channel_id)
        if entry is None or not entry.visible_to(tenant):
            raise not_found("channel", channel_id)
        return entry

    def _owned(self, tenant: str, channel_id: str) -> ChannelEntry:
        entry = self._visible(tenant, channel_id)
        if entry.from_file:
            raise failed_precondition(
                "CHANNEL_READ_ONLY", f"channel {channel_id!r} comes from the channels file"
            )
        return entry

    async def GetChannel(
        self, request: pb.GetChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetChannelResponse:
        entry = self._visible(tenant_of(context), request.channel_id)
        return pb.GetChannelResponse(channel=channel_to_proto(entry))

    def _checked(self, tenant: str, message: pb.Channel) -> Channel:
        """The channel as a tenant may have it: settings pass the tenant policy,
        and an adapter can be built from them."""
        channel = channel_from_proto(message)
        problems = tenant_settings_violations(channel, self._url_check)
        if problems:
            raise invalid(problems)
        try:
            self._channels.build(channel, tenant)
        except ValueError as exc:
            raise invalid([FieldViolation("settings", str(exc))]) from exc
        return channel

    async def CreateChannel(
        self, request: pb.CreateChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateChannelResponse:
        tenant = tenant_of(context)
        existing = self._channels.get(request.channel.channel_id)
        if existing is not None and existing.visible_to(tenant):
            raise already_exists(
                "CHANNEL_EXISTS", f"channel {request.channel.channel_id!r} already exists"
            )
        if existing is not None:
            # Ids are one namespace; the answer must not tell that another tenant has it.
            raise invalid([FieldViolation("channelId", "is not available; choose another id")])
        channel = self._checked(tenant, request.channel)
        await self._store.insert_channel(tenant, channel)
        self._channels_changed()
        entry = await self._channels.put(channel, tenant)
        return pb.CreateChannelResponse(channel=channel_to_proto(entry))

    async def UpdateChannel(
        self, request: pb.UpdateChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateChannelResponse:
        tenant = tenant_of(context)
        self._owned(tenant, request.channel.channel_id)
        channel = self._checked(tenant, request.channel)
        await self._store.replace_channel(tenant, channel)
        self._channels_changed()
        entry = await self._channels.put(channel, tenant)
        return pb.UpdateChannelResponse(channel=channel_to_proto(entry))

    async def DeleteChannel(
        self, request: pb.DeleteChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteChannelResponse:
        tenant = tenant_of(context)
        self._owned(tenant, request.channel_id)
        await self._store.delete_channel(tenant, request.channel_id)
        self._channels_changed()
        await self._channels.remove(request.channel_id)
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
        status = _STATUS_NAMES.get(request.channel_status, "")
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
