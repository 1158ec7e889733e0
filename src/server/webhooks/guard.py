"""Where a webhook may point (SSRF): a public http(s) address only, unless the
operator allows loopback and private ranges (GEOPERA_WEBHOOKS_ALLOW_PRIVATE).

The URL is checked when a hook is created and its host resolved again at every
delivery, and the sender connects to the addresses that check passed (see
sender.GuardedResolver), so a name that later resolves elsewhere (DNS
rebinding) is refused at delivery too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from geopera_kernel.server.errors import invalid_argument

MAX_URL_LENGTH = 2048
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationRefused(Exception):
    """A delivery address the guard refuses (logged as the attempt's error)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int


def parse_url(url: str) -> Target:
    """The URL's scheme, host and port, or INVALID_ARGUMENT `INVALID_WEBHOOK_URL`."""

    def refuse(why: str) -> Exception:
        return invalid_argument("INVALID_WEBHOOK_URL", f"url {why}", field="url")

    if not url:
        raise invalid_argument("URL_REQUIRED", "url is required", field="url")
    if len(url) > MAX_URL_LENGTH or not url.isascii() or any(c.isspace() or ord(c) < 32 for c in url):
        raise refuse(f"must be at most {MAX_URL_LENGTH} printable ASCII characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise refuse("is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise refuse("must be http:// or https://")
    if not parts.hostname:
        raise refuse("must name a host")
    if parts.username is not None or parts.password is not None:
        raise refuse("must not carry credentials (the signature authenticates the sender)")
    if parts.fragment:
        raise refuse("must not have a fragment")
    return Target(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))


def address_refused(address: IPAddress, allow_private: bool) -> str | None:
    """Why an address is refused, or None. Loopback and private ranges are
    refused unless allowed; link-local (cloud metadata at 169.254.169.254),
    multicast, unspecified and reserved ranges always."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast or address.is_unspecified:
        return "a multicast or unspecified address"
    if address.is_loopback:
        return None if allow_private else "a loopback address"
    if address.is_private or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED):
        return None if allow_private else "a private address"
    if address.is_reserved or not address.is_global:
        return "a reserved address"
    return None


_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def resolve_allowed(host: str, port: int, allow_private: bool) -> list[IPAddress]:
    """Every address of `host`, all of which the guard allows, or DestinationRefused."""
    literal = literal_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as err:
            raise DestinationRefused(f"cannot resolve {host!r}: {err}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
    if not addresses:
        raise DestinationRefused(f"{host!r} resolves to no address")
    for address in addresses:
        why = address_refused(address, allow_private)
        if why is not None:
            raise DestinationRefused(f"{host!r} resolves to {address}, {why}")
    return addresses


async def check_url(url: str, allow_private: bool) -> Target:
    """A hook's URL as created: well formed and resolving only to allowed
    addresses (INVALID_ARGUMENT `WEBHOOK_URL_NOT_ALLOWED` otherwise)."""
    target = parse_url(url)
    try:
        await resolve_allowed(target.host, target.port, allow_private)
    except DestinationRefused as refused:
        raise invalid_argument(
            "WEBHOOK_URL_NOT_ALLOWED",
            f"url refused: {refused}; webhooks go to public addresses only unless the operator sets "
            "GEOPERA_WEBHOOKS_ALLOW_PRIVATE",
            field="url",
        ) from None
    return target
