"""The address a request comes from, as the per-address limits count it.

``ClientAddresses`` finds it: the socket's peer, or, behind ``trust_proxy`` reverse
proxies, the entry of ``X-Forwarded-For`` that the nearest trusted proxy wrote. IPv6
addresses count by their /64 (one subscriber's usual allocation), IPv4-mapped IPv6 as the
IPv4 address.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Iterable

__all__ = ["ClientAddresses", "address_key"]

log = logging.getLogger("roomkeeper.http")


@functools.lru_cache(maxsize=4096)
def address_key(address: str) -> str:
    """The unit a limit counts: an IPv4 address, an IPv6 /64 network, or the text itself
    when it is no IP address (a Unix socket, say). Cached: a client's every request asks."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class ClientAddresses:
    """Finds the client address of a request, trusting ``hops`` reverse proxies."""

    def __init__(self, hops: int = 0) -> None:
        self.hops = hops
        self._warned = False
        self._warned_refusal = False

    def __call__(self, remote_addr: str | None, forwarded: Iterable[str]) -> str:
        """The limit key of a request from ``remote_addr`` with these ``X-Forwarded-For``
        header values. Each trusted proxy appends the address it saw, so the entry that
        ``hops`` proxies vouch for is the ``hops``-th from the end; with fewer entries, the
        first (the request passed fewer proxies); without any, the peer itself."""
        peer = remote_addr or "unknown"
        if self.hops == 0:
            if not self._warned and any(v.strip() for v in forwarded) and _is_loopback(peer):
                self._warned = True
                log.warning(
                    "requests come through a proxy (X-Forwarded-For) but --trust-proxy is 0: "
                    "per-address limits count every client of the proxy as one address"
                )
            return address_key(peer)
        entries = [e.strip() for value in forwarded for e in value.split(",") if e.strip()]
        if not entries:
            return address_key(peer)
        return address_key(entries[-min(self.hops, len(entries))])

    def refused(self, remote_addr: str | None) -> None:
        """A per-address limit refused a request: if it came from loopback with no proxy
        trusted, say once that a proxy in front may be making everyone one address."""
        if self.hops == 0 and not self._warned_refusal and _is_loopback(remote_addr or ""):
            self._warned_refusal = True
            log.warning(
                "a per-address limit refused %s: if roomkeeper runs behind a proxy, every "
                "client looks like this address; set --trust-proxy and X-Forwarded-For",
                remote_addr,
            )


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
