"""The private-address guard for outgoing webhooks (server-side request forgery).

A webhook URL is chosen by a subscriber (a seller's ERP), so without a guard tidings would
POST wherever it is told: the cloud metadata service (169.254.169.254), the admin port of a
database on 10.x, the service itself on 127.0.0.1. :func:`check_url` is the pure check used at
endpoint registration (IP literals and obviously local names); :func:`guard` adds a DNS
resolution at send time and refuses the URL if *any* address the name resolves to is not
public. ``allow_private=True`` (config ``allow_private_networks: true``) lets loopback and
private ranges through, for tests and on-premises ERPs.

The name is resolved once: :func:`guard` returns the addresses it approved and the caller
connects to one of those (:class:`~tidings.channels.http1.Http1Pool` with ``addresses``),
keeping the name for the ``Host`` header and TLS (SNI, certificate check). A second lookup
at connect time would let a DNS answer that changes between the two (DNS rebinding, a TTL of
zero) steer the request to an address the guard never saw.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit

from tidings.errors import PermanentProviderError, TransientProviderError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_SCHEMES = frozenset({"http", "https"})


class ForbiddenDestination(PermanentProviderError):
    """The URL's scheme or address is not allowed for outgoing requests."""


def forbidden_address(address: IPAddress) -> bool:
    """True when ``address`` is not a public unicast address (loopback, private, CGNAT …)."""
    if isinstance(address, ipaddress.IPv6Address):
        # an IPv6 spelling of an IPv4 address reaches that IPv4 address
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return forbidden_address(embedded)
    elif address in _CGNAT:
        return True
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def _literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address if it is one, including legacy IPv4 forms (``127.1``)."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        pass
    if host and all(char in "0123456789abcdefx." for char in host.lower()):
        try:  # inet_aton reads 127.1, 0x7f.1, 2130706433 as resolvers do
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _split(url: str) -> tuple[SplitResult, str]:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise ForbiddenDestination("webhook URL is malformed", code="invalid_url") from exc
    if parts.scheme.lower() not in _SCHEMES:
        raise ForbiddenDestination("webhook URL must be http or https", code="scheme")
    if not host:
        raise ForbiddenDestination("webhook URL has no host", code="invalid_url")
    return parts, host.rstrip(".").lower()


def check_url(url: str, allow_private: bool) -> None:
    """Refuse (``ForbiddenDestination``) a non-http(s) URL or one naming a non-public address.

    Pure (no DNS): fit for validating an endpoint at registration time. A host *name* that
    resolves to a private address is caught by :func:`guard` when sending.
    """
    _, host = _split(url)
    if allow_private:
        return
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: always loopback
        raise ForbiddenDestination("webhook URL points to a private address", code="ssrf")
    address = _literal_address(host)
    if address is not None and forbidden_address(address):
        raise ForbiddenDestination("webhook URL points to a private address", code="ssrf")


async def resolve_public(host: str, port: int) -> tuple[str, ...]:
    """Resolve ``host`` (through the running loop's resolver); refuse it if any of its
    addresses is not public. The addresses, in the resolver's order, to connect to."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        # NXDOMAIN may be a DNS hiccup or a moved ERP: let the retry budget decide
        raise TransientProviderError("webhook host does not resolve", code="dns") from exc
    addresses = [str(info[4][0]).split("%", 1)[0] for info in infos]
    if not addresses or any(forbidden_address(ipaddress.ip_address(a)) for a in addresses):
        raise ForbiddenDestination("webhook URL resolves to a private address", code="ssrf")
    return tuple(dict.fromkeys(addresses))


async def guard(url: str, allow_private: bool) -> tuple[str, ...]:
    """:func:`check_url`, then (unless ``allow_private``) :func:`resolve_public` on the host.

    The approved addresses to connect to; empty when there is nothing to pin (private
    networks allowed, where any answer would pass, or an IP literal, which needs no lookup).
    """
    check_url(url, allow_private)
    if allow_private:
        return ()
    parts, host = _split(url)
    if _literal_address(host) is not None:
        return ()  # already judged by check_url
    default_port = 443 if parts.scheme.lower() == "https" else 80
    return await resolve_public(host, parts.port or default_port)
