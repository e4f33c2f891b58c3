"""Which webhook URLs and addresses the notifier may connect to (server-side request forgery).

Only http and https; the host's addresses must all be public unicast unless inside an allowed CIDR
(WEBHOOK_ALLOWED_CIDRS; the local stack allows 127.0.0.0/8). The delivery client resolves the host
itself, checks here, and connects to the address it checked, so a DNS answer that changes between
the check and the connection (rebinding) cannot point it elsewhere."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = ("http", "https")
CGNAT = ipaddress.ip_network("100.64.0.0/10")


class RefusedURL(ValueError):
    """The reason is safe to show to the caller who registered the URL."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # with the query, as sent in the request line


def parse_allowed(text: str) -> tuple[IPNetwork, ...]:
    try:
        return tuple(
            ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",") if p.strip()
        )
    except ValueError as exc:
        raise ValueError(f"WEBHOOK_ALLOWED_CIDRS: {exc}") from exc


@functools.lru_cache(maxsize=4096)
def target_of(url: str) -> Target:
    """The parts of a webhook URL, or RefusedURL for anything but absolute http(s) without
    credentials or blanks. Cached: the dispatcher asks for every delivery."""
    if any(c <= " " or c == "\x7f" for c in url):
        raise RefusedURL("the URL holds blanks or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RefusedURL(f"not a valid URL: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise RefusedURL("only http and https URLs are accepted")
    if not parts.hostname:
        raise RefusedURL("the URL has no host")
    try:
        parts.hostname.encode("idna")  # what the resolver will do with it
    except UnicodeError as exc:
        raise RefusedURL(f"not a valid host name: {exc}") from None
    if parts.username is not None or parts.password is not None:
        raise RefusedURL("credentials in the URL are not accepted")
    if parts.fragment:
        raise RefusedURL("the URL has a fragment")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default = 443 if parts.scheme == "https" else 80
    return Target(parts.scheme, parts.hostname, port or default, path)


def refusal(address: IPAddress, allowed: Iterable[IPNetwork]) -> str | None:
    """Why the notifier must not connect to `address`, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address.version == net.version and address in net for net in allowed):
        return None
    kinds = (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("carrier-grade NAT", isinstance(address, ipaddress.IPv4Address) and address in CGNAT),
        ("private", address.is_private),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved or not address.is_global),
    )
    for kind, matches in kinds:
        if matches:
            return f"{address} is a {kind} address"
    return None


def first_allowed(addresses: Iterable[IPAddress], allowed: Iterable[IPNetwork]) -> IPAddress:
    """The address to connect to: all of the host's addresses must pass (one bad answer means the
    name is not a public receiver's), then the first is used."""
    nets = tuple(allowed)
    found = list(addresses)
    if not found:
        raise RefusedURL("the host has no address")
    for address in found:
        reason = refusal(address, nets)
        if reason is not None:
            raise RefusedURL(f"refused: {reason}")
    return found[0]
