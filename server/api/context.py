"""Per-call facts the servicers need from the transport."""

from __future__ import annotations

from contextvars import ContextVar

import grpc

from server.domain.tenants import DEFAULT_TENANT

__all__ = ["CALL_TENANT", "DEFAULT_TENANT", "metadata_value", "note_tenant", "tenant_of"]

# Set by the guard interceptor around each handler, for the task that runs it.
CALL_TENANT: ContextVar[str | None] = ContextVar("cimhub_call_tenant", default=None)


class NoTenant(RuntimeError):
    """A handler ran without the guard interceptor: a wiring bug, never a default."""


def tenant_of(context: grpc.aio.ServicerContext) -> str:
    tenant = CALL_TENANT.get()
    if tenant is None:
        raise NoTenant("no authenticated tenant for this call")
    return tenant


def metadata_value(context: grpc.aio.ServicerContext, key: str) -> str:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode()
    return ""


class CallFacts:
    """What the interceptors learn about a call, for the line logged when it ends."""

    __slots__ = ("tenant",)

    def __init__(self) -> None:
        self.tenant = ""


# Set by the tracing interceptor, outermost, around each handler.
CALL_FACTS: ContextVar[CallFacts | None] = ContextVar("cimhub_call_facts", default=None)


def note_tenant(tenant: str) -> None:
    facts = CALL_FACTS.get()
    if facts is not None:
        facts.tenant = tenant
