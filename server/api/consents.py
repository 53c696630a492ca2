"""ConsentService: the tenant's consent ledger and keyword settings, proto in and out."""

from __future__ import annotations

from typing import Protocol

import grpc

from cim.v1 import consent_service_pb2 as pb
from cim.v1 import consent_service_pb2_grpc as pb_grpc
from server.actions.consent import ConsentRules
from server.api.context import tenant_of
from server.domain.consent import (
    ConsentChange,
    ConsentEntry,
    ConsentSettings,
    ConsentSource,
    ConsentState,
    ConsentStep,
    check_keywords,
    normalise_address,
    normalise_scope,
)
from server.domain.errors import FieldViolation, invalid
from server.domain.models import Page
from server.domain.paging import CONSENTS, PageRequest


def _state_to_proto(state: ConsentState) -> pb.ConsentState.ValueType:
    return pb.ConsentState.Value(f"CONSENT_STATE_{state.value}")


def _state_from_proto(value: pb.ConsentState.ValueType) -> ConsentState | None:
    if value == pb.CONSENT_STATE_UNSPECIFIED:
        return None
    return ConsentState(pb.ConsentState.Name(value).removeprefix("CONSENT_STATE_"))


def _source_to_proto(source: ConsentSource) -> pb.ConsentSource.ValueType:
    return pb.ConsentSource.Value(f"CONSENT_SOURCE_{source.value}")


def _source_from_proto(value: pb.ConsentSource.ValueType) -> ConsentSource | None:
    if value == pb.CONSENT_SOURCE_UNSPECIFIED:
        return None
    return ConsentSource(pb.ConsentSource.Name(value).removeprefix("CONSENT_SOURCE_"))


def _channel_type(raw: str) -> str:
    kind = raw.strip().upper()
    if not kind or not kind.isalnum():
        raise invalid([FieldViolation("channelType", "a channel type such as SMS or EMAIL")])
    return kind


def consent_to_proto(e: ConsentEntry) -> pb.Consent:
    return pb.Consent(
        channel_type=e.channel_type,
        address=e.address,
        scope=e.scope,
        state=_state_to_proto(e.state),
        source=_source_to_proto(e.source),
        reason=e.reason,
        inbound_message_id=e.inbound_message_id,
        message_id=e.message_id,
        create_time=e.created_at,
        update_time=e.updated_at,
    )


def _step_to_proto(s: ConsentStep) -> pb.ConsentChange:
    return pb.ConsentChange(
        scope=s.scope,
        state=_state_to_proto(s.state),
        source=_source_to_proto(s.source),
        reason=s.reason,
        inbound_message_id=s.inbound_message_id,
        message_id=s.message_id,
        time=s.timestamp,
    )


def _settings_to_proto(s: ConsentSettings) -> pb.ConsentSettings:
    return pb.ConsentSettings(
        opt_out_keywords=list(s.opt_out_keywords),
        opt_in_keywords=list(s.opt_in_keywords),
        help_keywords=list(s.help_keywords),
        opt_out_reply=s.opt_out_reply,
        opt_in_reply=s.opt_in_reply,
        replies_disabled=s.replies_disabled,
    )


class ConsentStore(Protocol):
    async def list_consents(
        self,
        tenant_id: str,
        *,
        page: PageRequest,
        state: ConsentState | None = None,
        channel_type: str = "",
        source: ConsentSource | None = None,
    ) -> Page[ConsentEntry]: ...

    async def get_consent(
        self, tenant_id: str, channel_type: str, address: str
    ) -> tuple[list[ConsentEntry], list[ConsentStep]]: ...

    async def consent_settings(self, tenant_id: str) -> ConsentSettings: ...

    async def set_consent_settings(self, tenant_id: str, settings: ConsentSettings) -> None: ...


class ConsentServicer(pb_grpc.ConsentServiceServicer):
    def __init__(self, store: ConsentStore, rules: ConsentRules) -> None:
        self._store = store
        self._rules = rules

    async def ListConsents(
        self, request: pb.ListConsentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListConsentsResponse:
        tenant = tenant_of(context)
        state = _state_from_proto(request.state)
        channel_type = request.channel_type.strip().upper()
        source = _source_from_proto(request.source)
        wanted = CONSENTS.request(
            tenant,
            request.page_size,
            request.page_token,
            state=state,
            channel_type=channel_type,
            source=source,
        )
        page = await self._store.list_consents(
            tenant, page=wanted, state=state, channel_type=channel_type, source=source
        )
        return pb.ListConsentsResponse(
            results=[consent_to_proto(e) for e in page.items], next_page_token=page.next_token
        )

    async def GetConsent(
        self, request: pb.GetConsentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConsentResponse:
        kind = _channel_type(request.channel_type)
        address = normalise_address(kind, request.address)
        entries, steps = await self._store.get_consent(tenant_of(context), kind, address)
        return pb.GetConsentResponse(
            consents=[consent_to_proto(e) for e in entries],
            history=[_step_to_proto(s) for s in steps],
        )

    async def SetConsent(
        self, request: pb.SetConsentRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetConsentResponse:
        kind = _channel_type(request.channel_type)
        state = _state_from_proto(request.state)
        if state is None:
            raise invalid([FieldViolation("state", "OPTED_OUT or OPTED_IN")])
        change = ConsentChange(
            kind,
            normalise_address(kind, request.address),
            normalise_scope(request.scope),
            state,
            ConsentSource.API,
            reason=request.reason,
        )
        applied = await self._rules.record(tenant_of(context), change)
        return pb.SetConsentResponse(consent=consent_to_proto(applied.entry))

    async def GetConsentSettings(
        self, request: pb.GetConsentSettingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConsentSettingsResponse:
        stored = await self._store.consent_settings(tenant_of(context))
        return pb.GetConsentSettingsResponse(settings=_settings_to_proto(stored.in_force()))

    async def UpdateConsentSettings(
        self, request: pb.UpdateConsentSettingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateConsentSettingsResponse:
        given = request.settings
        problems = []
        for name in ("opt_out_keywords", "opt_in_keywords", "help_keywords"):
            words = list(getattr(given, name))
            json_name = given.DESCRIPTOR.fields_by_name[name].json_name
            problems.extend(check_keywords(words, f"settings.{json_name}"))
        if problems:
            raise invalid(problems)
        settings = ConsentSettings(
            opt_out_keywords=tuple(given.opt_out_keywords),
            opt_in_keywords=tuple(given.opt_in_keywords),
            help_keywords=tuple(given.help_keywords),
            opt_out_reply=given.opt_out_reply,
            opt_in_reply=given.opt_in_reply,
            replies_disabled=given.replies_disabled,
        )
        tenant = tenant_of(context)
        await self._store.set_consent_settings(tenant, settings)
        return pb.UpdateConsentSettingsResponse(settings=_settings_to_proto(settings.in_force()))
