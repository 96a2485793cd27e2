"""The HTTP edge's defences, without a server: client addresses behind proxies, the
per-address budgets of new sessions and open streams. (Room tickets: test_admission.py.)"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from roomkeeper.http.addresses import ClientAddresses, address_key
from roomkeeper.http.budgets import SWEPT, AddressLimits

# --- addresses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:198.51.100.1", "198.51.100.1"),
        ("unknown", "unknown"),
        ("/run/roomkeeper.sock", "/run/roomkeeper.sock"),
    ],
)
def test_address_key(address: str, key: str) -> None:
    assert address_key(address) == key


def test_without_trusted_proxies_the_peer_counts_and_x_forwarded_for_is_ignored() -> None:
    addresses = ClientAddresses(0)
    assert addresses("198.51.100.9", ["1.2.3.4"]) == "198.51.100.9"
    assert addresses(None, []) == "unknown"


def test_one_trusted_proxy_gives_the_last_entry() -> None:
    addresses = ClientAddresses(1)
    # A client may send any X-Forwarded-For it likes; the proxy appends what it saw.
    assert addresses("127.0.0.1", ["6.6.6.6, 203.0.113.7"]) == "203.0.113.7"
    assert addresses("127.0.0.1", ["6.6.6.6", "203.0.113.7"]) == "203.0.113.7"  # two fields
    assert addresses("127.0.0.1", ["2001:db8::1"]) == "2001:db8::/64"
    assert addresses("127.0.0.1", []) == "127.0.0.1"  # not through the proxy
    assert addresses("127.0.0.1", [" , "]) == "127.0.0.1"


def test_two_trusted_proxies_give_the_second_last_entry() -> None:
    addresses = ClientAddresses(2)
    assert addresses("10.0.0.2", ["6.6.6.6, 203.0.113.7, 10.0.0.1"]) == "203.0.113.7"
    assert addresses("10.0.0.2", ["203.0.113.7"]) == "203.0.113.7"  # only one proxy passed


def test_a_proxy_that_is_not_trusted_is_warned_about_once(caplog: Any) -> None:
    addresses = ClientAddresses(0)
    with caplog.at_level(logging.WARNING, logger="roomkeeper.http"):
        for _ in range(3):
            addresses("127.0.0.1", ["203.0.113.7"])
        addresses("198.51.100.1", ["203.0.113.7"])  # not loopback: no proxy of ours
    assert [r.getMessage() for r in caplog.records if "--trust-proxy" in r.getMessage()] != []
    assert len(caplog.records) == 1


# --- budgets -----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limits(clock: Clock, **kw: Any) -> AddressLimits:
    return AddressLimits(
        **{"per_minute": 60.0, "burst": 3.0, "streams": 2, "clock": clock, **kw}  # type: ignore[arg-type]
    )


def test_new_sessions_burst_then_refill_per_minute() -> None:
    clock = Clock()
    lim = limits(clock)
    assert [lim.take_session("a") for _ in range(3)] == [None, None, None]
    assert lim.take_session("a") == 1  # one a second
    assert lim.take_session("b") is None  # another address has its own budget
    clock.now += 1.0
    assert lim.take_session("a") is None
    assert lim.take_session("a") == 1
    clock.now += 10
    assert [lim.take_session("a") for _ in range(4)] == [None, None, None, 1]  # capped at burst


def test_retry_after_is_whole_seconds_for_slow_rates() -> None:
    clock = Clock()
    lim = limits(clock, per_minute=2.0, burst=1.0)
    assert lim.take_session("a") is None
    assert lim.take_session("a") == 30
    clock.now += 29.5
    assert lim.take_session("a") == 1


def test_a_refund_gives_back_a_session() -> None:
    lim = limits(Clock())
    for _ in range(3):
        assert lim.take_session("a") is None
    lim.refund_session("a")
    assert lim.take_session("a") is None
    for _ in range(5):
        lim.refund_session("a")
    assert [lim.take_session("a") for _ in range(4)] == [None, None, None, 1]


def test_streams_per_address() -> None:
    lim = limits(Clock())
    first, second = lim.open_stream("a"), lim.open_stream("a")
    assert first is not None and second is not None
    assert lim.open_stream("a") is None
    assert lim.open_stream("b") is not None
    first.start()
    first.release()
    third = lim.open_stream("a")
    assert third is not None and lim.open_streams("a") == 2
    third.release()
    third.release()  # idempotent
    assert lim.open_streams("a") == 1


def test_a_slot_whose_body_never_started_frees_when_the_stream_is_gone() -> None:
    """A client that goes away before its response starts never runs the body's
    ``finally``: the slot is freed once the runtime has closed the stream (unclaimed)."""
    lim = limits(Clock(), streams=1)
    slot = lim.open_stream("a")
    assert slot is not None
    alive = True
    slot.bind(lambda: alive)
    assert lim.open_stream("a") is None
    alive = False
    assert lim.open_stream("a") is not None


def test_a_started_slot_is_held_until_released_whatever_the_stream() -> None:
    """A stream the runtime ended (overflow) whose connection is still open (a client
    that does not read) still counts: the connection is what costs."""
    lim = limits(Clock(), streams=1)
    slot = lim.open_stream("a")
    assert slot is not None
    slot.bind(lambda: False)
    slot.start()
    assert lim.open_stream("a") is None


def test_the_table_of_addresses_stays_bounded() -> None:
    clock = Clock()
    lim = limits(clock)
    for n in range(10_000):
        lim.take_session(f"10.0.{n // 256}.{n % 256}")
        clock.now += 0.01
    # Each address refills within 1 s (one session spent, one a second): old ones go.
    assert len(lim) < 300
    held = lim.open_stream("203.0.113.1")
    assert held is not None
    for n in range(1000):
        lim.take_session(f"10.1.{n // 256}.{n % 256}")
        clock.now += 0.01
    assert lim.open_streams("203.0.113.1") == 1  # an address with a stream is kept


def test_a_connect_checks_a_bounded_number_of_waiting_streams() -> None:
    """A reconnect storm from one address: 1,000 streams wait for their answers to begin,
    and each further connect looks at no more of them than the sweep's few."""
    checks = 0

    def alive() -> bool:
        nonlocal checks
        checks += 1
        return True

    lim = limits(Clock(), burst=1e9, streams=100_000)
    for _ in range(1000):
        slot = lim.open_stream("a")
        assert slot is not None
        slot.bind(alive)
    checks = 0
    for _ in range(100):
        assert lim.take_session("a") is None
        assert lim.open_stream("a") is not None
    assert checks <= 100 * 2 * SWEPT
    assert lim.open_streams("a") == 1100


def test_a_stream_gone_before_its_answer_is_freed_by_the_sweep() -> None:
    """Below the cap nothing checks a waiting stream on connect: the sweep frees it, and
    forgets its address."""
    lim = limits(Clock())
    gone = lim.open_stream("a")
    assert gone is not None
    gone.bind(lambda: False)
    lim.take_session("b")
    assert len(lim) == 1  # "a" freed and forgotten; "b" spent a session
