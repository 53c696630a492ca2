"""Which addresses outbound HTTP to tenant-supplied URLs may reach: global ones only.

Addresses that carry an IPv4 address inside an IPv6 one (IPv4-mapped, NAT64,
6to4) are judged by the IPv4 address they lead to.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


class UnsafeUrl(Exception):
    """The URL may not be fetched; the message says why, without internals."""


def embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    return None


def _not_global(ip: IPAddress) -> str | None:
    checks = (
        ("loopback", ip.is_loopback),
        ("unspecified", ip.is_unspecified),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    )
    for name, hit in checks:
        if hit:
            return name
    if isinstance(ip, ipaddress.IPv6Address) and ip in _NAT64_LOCAL:
        return "private"
    # Catches what the flags above miss, such as shared address space (100.64/10).
    return None if ip.is_global else "non-global"


@dataclass(frozen=True)
class AddressPolicy:
    """Global addresses only, except networks explicitly allowed (local development)."""

    allow: tuple[IPNetwork, ...] = ()
    https_only: bool = False

    @staticmethod
    def of(allow: Iterable[str] = (), *, https_only: bool = False) -> AddressPolicy:
        return AddressPolicy(
            tuple(ipaddress.ip_network(c, strict=False) for c in allow), https_only
        )

    def _allowed(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.allow)

    def refusal(self, ip: IPAddress) -> str | None:
        """Why ip may not be reached, or None when it may."""
        if self._allowed(ip):
            return None
        if isinstance(ip, ipaddress.IPv6Address):
            inner = embedded_v4(ip)
            if inner is not None:
                if self._allowed(inner):
                    return None
                why = _not_global(inner)
                if why is not None:
                    return f"{why} address {inner} inside {ip}"
        why = _not_global(ip)
        return None if why is None else f"{why} address {ip}"

    def check_url(self, url: str) -> tuple[str, IPAddress | None]:
        """The URL's host, and its address when the host is an IP literal; UnsafeUrl if refused.

        Names are checked after resolution, when the connection is made.
        """
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError as exc:
            raise UnsafeUrl("malformed URL") from exc
        allowed = ("https",) if self.https_only else ("http", "https")
        if parts.scheme not in allowed:
            raise UnsafeUrl(f"scheme must be {' or '.join(allowed)}")
        host = parts.hostname or ""
        if not host:
            raise UnsafeUrl("URL has no host")
        why = self.host_refusal(host)
        if why is not None:
            raise UnsafeUrl(why)
        return host, literal_address(host)

    def host_refusal(self, host: str) -> str | None:
        """Why host is refused without a lookup (an internal literal address, a loopback name)."""
        literal = literal_address(host)
        if literal is not None:
            why = self.refusal(literal)
            return f"refused {why}" if why is not None else None
        if _loopback_name(host) and all(self.refusal(ip) for ip in _LOOPBACK):
            # Resolvers answer these names locally (RFC 6761), so no lookup is needed to refuse.
            return f"refused loopback name {host}"
        return None


_LOOPBACK = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))


def _loopback_name(host: str) -> bool:
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def address_refusal(policy: AddressPolicy, url: str) -> str | None:
    """Why the URL points inside, judged on its host alone, or None.

    For URLs that are only fetched later, perhaps never (a media part a message's
    type does not use): its scheme and form are for the fetcher to judge.
    """
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return policy.host_refusal(host) if host else None


def url_refusal(policy: AddressPolicy, url: str) -> str | None:
    """Why url is refused before anything is resolved (scheme, literal address), or None."""
    try:
        policy.check_url(url)
    except UnsafeUrl as exc:
        return str(exc)
    return None


def literal_address(host: str) -> IPAddress | None:
    """host as an IP address, including the short and numeric IPv4 forms inet_aton takes."""
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        pass
    return _inet_aton(text)


def _inet_aton(text: str) -> ipaddress.IPv4Address | None:
    # 127.1, 2130706433, 0x7f000001, 0177.0.0.1: what the C resolver would accept.
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        try:
            if part.lower().startswith("0x"):
                values.append(int(part[2:], 16))
            elif len(part) > 1 and part.startswith("0"):
                values.append(int(part, 8))
            else:
                values.append(int(part, 10))
        except ValueError:
            return None
    if any(v < 0 for v in values):
        return None
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(values)):
        return None
    number = 0
    for v in head:
        number = number * 256 + v
    number = number * 256 ** (4 - len(head)) + last
    return ipaddress.IPv4Address(number)
