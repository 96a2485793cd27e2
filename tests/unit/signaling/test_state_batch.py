"""A batch of signals (RoomState.signal_batch): taken in order as single signals are, up to
the first refused, and the same as those single signals, effects and writes included."""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from roomkeeper.jsonutil import dumps
from roomkeeper_actors.signaling.state import (
    Accepted,
    Connected,
    Emit,
    FreshSession,
    Rejected,
    RoomConfig,
    RoomState,
)

T0 = 1_700_000_000.0


def room(**config: Any) -> RoomState:
    """A room with sessions 1 and 2 connected and session 3 disconnected."""
    state = RoomState("r", RoomConfig(**config))
    for n in (1, 2, 3):
        result = state.connect(
            T0,
            session_id=None,
            token=None,
            last_event_id=None,
            fresh=FreshSession(f"s{n}", f"t{n}", n),
        )
        assert isinstance(result, Connected)
    state.disconnected(T0, "s3", 0)
    state.take_writes()
    return state


def item(to: int, n: int, rid: str | None = None) -> tuple[str, bytes, str | None]:
    return f"s{to}", dumps({"n": n}), rid


def batch(state: RoomState, items: list[tuple[str, bytes, str | None]], token: str = "t1") -> Any:
    return state.signal_batch(T0, sender="s1", token=token, signals=items)


def emitted(result: Accepted | Rejected) -> list[bytes]:
    return [e.data for e in result.effects if isinstance(e, Emit)]


def test_a_batch_taken_whole_emits_each_signal_in_order() -> None:
    taken, result = batch(room(), [item(2, 1), item(2, 2), item(3, 3)])
    assert taken == 3 and isinstance(result, Accepted)
    assert emitted(result) == [b'{"from":"s1","signal":{"n":1}}', b'{"from":"s1","signal":{"n":2}}']


def test_the_batch_stops_at_the_first_refused_signal() -> None:
    state = room(rate_burst=2.0, rate_refill=0.01)
    taken, result = batch(state, [item(2, 1), item(2, 2), item(2, 3), item(2, 4)])
    assert taken == 2 and isinstance(result, Rejected)
    assert (result.status, result.retry_after) == (429, 100)
    assert len(emitted(result)) == 2  # the effects of the signals taken are kept


def test_a_signal_to_an_unknown_peer_stops_the_batch_and_nothing_after_it_is_looked_at() -> None:
    state = room()
    taken, result = batch(state, [item(2, 1), item(9, 2), item(2, 3)])
    assert taken == 1 and isinstance(result, Rejected) and result.status == 404
    assert emitted(result) == [b'{"from":"s1","signal":{"n":1}}']


def test_a_wrong_token_takes_nothing() -> None:
    taken, result = batch(room(), [item(2, 1)], token="nope")
    assert taken == 0 and isinstance(result, Rejected) and result.status == 403


def test_a_retried_batch_with_ids_delivers_nothing_twice() -> None:
    state = room(rate_burst=3.0, rate_refill=1.0)
    items = [item(2, n, f"id-{n}") for n in range(5)]
    taken, first = batch(state, items)
    assert taken == 3 and isinstance(first, Rejected) and first.status == 429
    # resent whole: the signals taken answer as duplicates (each spends the budget)
    taken, again = state.signal_batch(T0 + 10, sender="s1", token="t1", signals=items)
    assert taken == 3 and emitted(again) == []
    # resent from the first not taken, as a client should
    taken, rest = state.signal_batch(T0 + 20, sender="s1", token="t1", signals=items[3:])
    assert taken == 2 and isinstance(rest, Accepted)
    assert emitted(rest) == [dumps({"from": "s1", "signal": {"n": n}}) for n in (3, 4)]


# --- the same as single signals -------------------------------------------------------------

targets = st.sampled_from([2, 3, 9])  # connected, reconnecting, unknown
items = st.lists(
    st.tuples(targets, st.integers(0, 5), st.one_of(st.none(), st.sampled_from(["a", "b", "c"]))),
    min_size=1,
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(
    rounds=st.lists(items, min_size=1, max_size=4),
    burst=st.integers(1, 6),
    queue_limit=st.integers(0, 3),
)
def test_a_batch_is_the_single_signals_it_holds_up_to_the_first_refused(
    rounds: list[list[tuple[int, int, str | None]]], burst: int, queue_limit: int
) -> None:
    config = {"rate_burst": float(burst), "rate_refill": 1.0, "queue_limit": queue_limit}
    batched, single = room(**config), room(**config)
    for k, signals in enumerate(rounds):
        now = T0 + k
        encoded = [item(to, n, rid) for to, n, rid in signals]
        taken, result = batched.signal_batch(now, sender="s1", token="t1", signals=encoded)
        effects, outcome = [], None
        for count, (to, payload, rid) in enumerate(encoded):
            one = single.signal(
                now, sender="s1", token="t1", to=to, payload=payload, request_id=rid
            )
            effects += one.effects
            if isinstance(one, Rejected):
                outcome = (count, attrs.evolve(one, effects=effects))
                break
        else:
            outcome = (len(encoded), Accepted(effects))
        assert (taken, result) == outcome
        assert batched.take_writes() == single.take_writes()
        assert batched.held == single.held
