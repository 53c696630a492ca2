"""What a tenant may put in the settings of a channel it creates.

The channels file is the operator's: it may name the server's environment
variables and files and point at internal hosts. A channel created over the API
is a tenant's, and its adapter would carry whatever those name to an address of
the tenant's choosing, so a tenant channel holds its credentials as values and
its endpoints must pass the same outbound guard as notifyUrl.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from server.domain.errors import FieldViolation
from server.domain.models import Channel

# Keys that name something on the server rather than carry a value.
_ENV_SUFFIX = "_env"
_RESOURCE_SUFFIXES = ("_file", "_path", "_dir")
_RESOURCE_KEYS = frozenset({"sent_log"})
# Keys whose value is a bare host name the adapter connects to (SMTP's relay).
_HOST_KEYS = frozenset({"host"})
_URL_VALUE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
# A DNS name, an IPv4 literal in any spelling inet_aton takes, or an IPv6 literal.
_HOST_SYNTAX = re.compile(r"^(?:[A-Za-z0-9_\-.]+|\[?[0-9A-Fa-f:.]+\]?)$")

UrlRefusal = Callable[[str], str | None]


def tenant_settings_violations(channel: Channel, url_refusal: UrlRefusal) -> list[FieldViolation]:
    """Every reason the channel's settings may not come from a tenant, field by field.

    Nothing is looked up: an env-var key is refused for being there, so the
    answer is the same whether the server has that variable or not.
    """
    problems: list[FieldViolation] = []
    for key, value in channel.settings.items():
        _check(str(key), value, f"settings.{key}", url_refusal, problems)
    return problems


def _check(
    key: str, value: Any, path: str, url_refusal: UrlRefusal, problems: list[FieldViolation]
) -> None:
    why = _refusal(key, value, url_refusal)
    if why is not None:
        problems.append(FieldViolation(path, why))
    elif isinstance(value, Mapping):
        for inner_key, inner in value.items():
            _check(str(inner_key), inner, f"{path}.{inner_key}", url_refusal, problems)
    elif isinstance(value, list | tuple):
        # A list item is judged as a value of its list's key.
        for index, item in enumerate(value):
            _check(key, item, f"{path}[{index}]", url_refusal, problems)


def operator_only(key: str) -> bool:
    """The key names a server resource (variable, file, path), which only operators may."""
    name = key.lower()
    return name.endswith(_ENV_SUFFIX) or name.endswith(_RESOURCE_SUFFIXES) or name in _RESOURCE_KEYS


def _refusal(key: str, value: Any, url_refusal: UrlRefusal) -> str | None:
    name = key.lower()
    if name.endswith(_ENV_SUFFIX):
        credential = key[: -len(_ENV_SUFFIX)]
        return (
            "a tenant channel may not name a server environment variable; "
            f"send the credential itself as {credential!r}"
        )
    if operator_only(name):
        return "names a file or path on the server, which only the channels file may"
    if name in _HOST_KEYS or name.endswith("_host"):
        return _host_refusal(value, url_refusal)
    if name.endswith("url") or (isinstance(value, str) and _URL_VALUE.match(value)):
        if not isinstance(value, str) or not value:
            return "must be an absolute http(s) URL"
        return url_refusal(value)
    return None


def _host_refusal(value: Any, url_refusal: UrlRefusal) -> str | None:
    if not isinstance(value, str) or not _HOST_SYNTAX.match(value):
        return "must be a host name or an IP address"
    bare = value.strip("[]")
    # Judged as the host of an https URL, so that only its address counts.
    url = f"https://[{bare}]/" if ":" in bare else f"https://{bare}/"
    try:
        parsed = urlsplit(url).hostname
    except ValueError:
        parsed = None
    if parsed is None or parsed != bare.lower():
        return "must be a host name or an IP address"
    return url_refusal(url)
