"""The x-verify-token check of the inbound webhooks."""

from __future__ import annotations

import hmac

import grpc

from server.api.context import metadata_value
from server.domain.errors import Code, DomainError

VERIFY_TOKEN_HEADER = "x-verify-token"


def check_verify_token(context: grpc.aio.ServicerContext, expected: str) -> None:
    """Refuse the call unless it carries the configured token.

    The comparison takes the same time wherever the strings differ, so the
    token cannot be guessed byte by byte. An empty configured token disables
    the webhooks rather than accepting everyone.
    """
    given = metadata_value(context, VERIFY_TOKEN_HEADER)
    if expected and given and hmac.compare_digest(given.encode(), expected.encode()):
        return
    raise DomainError(
        Code.UNAUTHENTICATED,
        "INVALID_VERIFY_TOKEN",
        f"missing or wrong {VERIFY_TOKEN_HEADER} header",
    )
