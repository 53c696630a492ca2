"""What aiohttp logs about requests that are not valid HTTP.

aiohttp logs every request it cannot parse (a NUL or a raw control character
in a header, a broken request line) with a full traceback at ERROR, although
the fault is the client's and the reply is already a 400. Such a request is
logged here as one INFO line naming the fault, as other refusals are; errors
of the server's own still get their traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger("server.gateway.http")


class ProtocolLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Handed to aiohttp's request handler in place of its server logger."""

    def __init__(self, logger: logging.Logger = logging.getLogger("aiohttp.server")) -> None:
        super().__init__(logger, {})

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            remote = args[0] if args else "?"
            log.info("malformed HTTP request from %s refused: %s", remote, _one_line(exc.message))
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)


def _one_line(message: str) -> str:
    # aiohttp's message goes on with the offending bytes, which may hold a
    # credential (a key header with a stray byte): only the fault is logged.
    first = str(message).strip().splitlines()[:1]
    return first[0].rstrip(":") if first else "unreadable request"
