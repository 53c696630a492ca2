"""Media URLs a provider fetches for us are held to the outbound guard all the same.

WhatsApp and RBM take a link and fetch the file themselves. A link the guard
refuses (an internal address, a scheme it does not allow) would be refused on
every attempt, so the message fails at once instead of being retried.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from adapters.base import PermanentProviderError
from server.net.http import OutboundError, OutboundHttp, RefusedUrl

# Where the providers' request bodies carry a URL the provider will fetch.
MEDIA_URL_KEYS = frozenset({"link", "fileUrl", "thumbnailUrl"})

URL_REFUSED = "URL_REFUSED"


def url_refused(what: str, exc: OutboundError) -> PermanentProviderError:
    return PermanentProviderError(f"{what} not allowed: {exc.reason}", URL_REFUSED)


def media_urls(body: Any) -> Iterator[str]:
    if isinstance(body, Mapping):
        for key, value in body.items():
            if key in MEDIA_URL_KEYS and isinstance(value, str):
                yield value
            else:
                yield from media_urls(value)
    elif isinstance(body, list | tuple):
        for value in body:
            yield from media_urls(value)


def vet_media_urls(fetcher: OutboundHttp, body: Any) -> None:
    """Raise a permanent URL_REFUSED error for the first media URL the guard refuses."""
    for url in media_urls(body):
        try:
            fetcher.check(url)
        except RefusedUrl as exc:
            raise url_refused("media URL", exc) from exc
