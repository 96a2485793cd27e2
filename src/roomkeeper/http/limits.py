"""Who may open sessions and streams, how many and how often: the HTTP edge's defences.

- ``ClientAddresses``: the address a request comes from: the socket's peer, or, behind
  ``trust_proxy`` reverse proxies, the entry of ``X-Forwarded-For`` that the nearest
  trusted proxy wrote. IPv6 addresses count by their /64 (one subscriber's usual
  allocation), IPv4-mapped IPv6 as the IPv4 address.
- ``AddressLimits``: per address, a token bucket of new sessions (resuming one is free)
  and a cap on open event streams. Its table of addresses stays bounded: idle addresses
  with a full bucket and no stream are forgotten as the table is used.

Room tickets (``--admission``) are in admission.py.

Everything here is synchronous and takes its clock as an argument, for tests.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

__all__ = [
    "STREAMS_RETRY_AFTER",
    "AddressLimits",
    "ClientAddresses",
    "StreamSlot",
    "address_key",
]

log = logging.getLogger("roomkeeper.http")

STREAMS_RETRY_AFTER = 5
"""Retry-After (seconds) when an address holds too many streams: one may end soon."""


# --- client addresses ----------------------------------------------------------------------


def address_key(address: str) -> str:
    """The unit a limit counts: an IPv4 address, an IPv6 /64 network, or the text itself
    when it is no IP address (a Unix socket, say)."""
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
            if not self._warned and _is_loopback(peer) and any(v.strip() for v in forwarded):
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


# --- per-address budgets ----------------------------------------------------------------------


class StreamSlot:
    """One open stream counted against an address. It is freed by ``release`` (the
    response ended), or, if its response body never started (the client went away
    first), as soon as ``alive`` says the runtime closed the stream (unclaimed)."""

    __slots__ = ("_alive", "_entry", "released", "started")

    def __init__(self, entry: _Entry) -> None:
        self._entry = entry
        self.released = False
        self.started = False
        self._alive: Callable[[], bool] | None = None

    def bind(self, alive: Callable[[], bool]) -> None:
        """The stream is open; ``alive()`` tells whether the runtime still holds it."""
        self._alive = alive

    def start(self) -> None:
        self.started = True
        self._entry.waiting.discard(self)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._entry.open -= 1
            self._entry.waiting.discard(self)

    def live(self) -> bool:
        alive = self._alive
        if not (self.released or self.started or alive is None or alive()):
            self.release()
        return not self.released


class _Entry:
    """One address: its bucket of new sessions, and its open streams (a count, and the
    few whose response has not started yet, which may need freeing by ``alive``)."""

    __slots__ = ("open", "stamp", "tokens", "waiting")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.open = 0
        self.waiting: set[StreamSlot] = set()

    def refill(self, now: float, burst: float, rate: float) -> None:
        if now > self.stamp:
            self.tokens = min(burst, self.tokens + (now - self.stamp) * rate)
            self.stamp = now

    def live_slots(self) -> int:
        for slot in list(self.waiting):
            slot.live()
        return self.open


class AddressLimits:
    """Per client address: new sessions from a token bucket (``burst`` at once, then
    ``per_minute``), and at most ``streams`` open event streams."""

    def __init__(
        self,
        *,
        per_minute: float,
        burst: float,
        streams: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.streams = streams
        self.clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        """Addresses currently remembered (for tests: the table stays bounded)."""
        return len(self._entries)

    def _entry(self, key: str) -> _Entry:
        now = self.clock()
        self._sweep(now)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(self.burst, now)
        else:
            self._entries.move_to_end(key)
            entry.refill(now, self.burst, self.rate)
        return entry

    def _sweep(self, now: float, count: int = 2) -> None:
        """Look at the least recently used addresses: forget those with nothing to
        remember (a full bucket, no stream), move the others to the back."""
        for _ in range(min(count, len(self._entries))):
            key, entry = next(iter(self._entries.items()))
            entry.refill(now, self.burst, self.rate)
            if entry.tokens >= self.burst and not entry.live_slots():
                del self._entries[key]
            else:
                self._entries.move_to_end(key)

    def take_session(self, key: str) -> int | None:
        """Spend one new session of ``key``'s budget: None if there was one, else the
        whole seconds until there is (for Retry-After)."""
        entry = self._entry(key)
        if entry.tokens >= 1.0:
            entry.tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - entry.tokens) / self.rate))

    def refund_session(self, key: str) -> None:
        """Give back what ``take_session`` took: no session was made after all."""
        entry = self._entry(key)
        entry.tokens = min(self.burst, entry.tokens + 1.0)

    def open_stream(self, key: str) -> StreamSlot | None:
        """A slot for one more stream of ``key``, or None if it holds ``streams`` already."""
        entry = self._entry(key)
        if entry.live_slots() >= self.streams:
            return None
        slot = StreamSlot(entry)
        entry.open += 1
        entry.waiting.add(slot)
        return slot

    def open_streams(self, key: str) -> int:
        entry = self._entries.get(key)
        return 0 if entry is None else entry.live_slots()
