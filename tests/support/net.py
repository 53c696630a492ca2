"""Outbound HTTP for tests whose fake servers listen on loopback."""

from __future__ import annotations

from typing import Any

from server.net.addresses import AddressPolicy
from server.net.http import OutboundHttp

LOOPBACK = ("127.0.0.0/8", "::1/128")


def loopback_http(**kwargs: Any) -> OutboundHttp:
    """An OutboundHttp whose guard lets loopback through, as local development does."""
    return OutboundHttp(policy=AddressPolicy.of(LOOPBACK), **kwargs)
