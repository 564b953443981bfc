"""Who is on the other end: the client address that rate limits and anonymous scopes are keyed by.

The address is the socket peer's. ``X-Forwarded-For`` is a header any client can send, so
it counts only when the peer is a trusted proxy (``trusted_proxies``: addresses or
networks): then the hops are read from the right, skipping trusted proxies, and the first
hop that is not one is the client (the hops to its left are whatever the client claimed).
Behind a proxy that is not listed, every client has the proxy's address.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

from aiohttp import web

from .settings import proxy_network


class ClientAddresses:
    """Resolves a request's client address; built once from ``trusted_proxies``."""

    def __init__(self, trusted_proxies: tuple[str, ...]) -> None:
        self._networks = tuple(proxy_network(value) for value in trusted_proxies)

    def of(self, request: web.Request) -> str:
        remote = request.remote or "unknown"
        if not self.is_trusted(remote):
            return remote
        hops = [hop.strip() for value in request.headers.getall("X-Forwarded-For", [])
                for hop in value.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.is_trusted(hop):
                return hop
        return remote

    def is_trusted(self, address: str) -> bool:
        if not self._networks:
            return False
        parsed = _parse(address)
        return parsed is not None and any(parsed in network for network in self._networks)


def _parse(address: str) -> IPv4Address | IPv6Address | None:
    try:
        parsed = ip_address(address)
    except ValueError:
        return None
    if isinstance(parsed, IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped  # ::ffff:10.0.0.1 on a dual-stack socket is 10.0.0.1
    return parsed
