"""Tenants the hub knows without being told."""

from __future__ import annotations

# The tenant of calls that authenticate by other means (health, and the inbound
# webhooks, which carry a verify token), the bootstrap key's tenant, and the
# owner of the operator's channels.
DEFAULT_TENANT = "default"
