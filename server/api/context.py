"""Per-call facts the servicers need from the transport."""

from __future__ import annotations

import grpc

# Authentication (and with it real tenants) arrives with its own interceptor;
# until then every caller acts for the bootstrap tenant.
DEFAULT_TENANT = "default"


def tenant_of(context: grpc.aio.ServicerContext) -> str:
    return DEFAULT_TENANT


def metadata_value(context: grpc.aio.ServicerContext, key: str) -> str:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode()
    return ""
