"""Unit tests of the room's rules (RoomState), one rule or status at a time."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

import pytest

from roomkeeper.jsonutil import dumps, loads
from roomkeeper_actors.signaling.state import (
    ID_SPAN,
    ROOM_FULL,
    Accepted,
    Connected,
    Emit,
    EndStream,
    FreshSession,
    Outgoing,
    Rejected,
    RoomConfig,
    RoomState,
)

T0 = 1_700_000_000.0


def fresh(n: int) -> FreshSession:
    return FreshSession(f"sid-{n}", f"tok-{n}", 1000 + n)


def join(state: RoomState, n: int, now: float = T0) -> Connected:
    result = state.connect(now, session_id=None, token=None, last_event_id=None, fresh=fresh(n))
    assert isinstance(result, Connected)
    return result


def send(
    state: RoomState, sender: int, to: int, now: float = T0, rid: str | None = None, **payload: Any
) -> Accepted | Rejected:
    return state.signal(
        now,
        sender=f"sid-{sender}",
        token=f"tok-{sender}",
        to=f"sid-{to}",
        payload=dumps(payload or {"n": 1}),
        request_id=rid,
    )


def ok(result: Accepted | Rejected) -> Accepted:
    assert isinstance(result, Accepted), result
    return result


def the_emit(result: Accepted | Rejected) -> Emit:
    """The one effect of an accepted signal to a connected peer."""
    (emit,) = ok(result).effects
    assert isinstance(emit, Emit)
    return emit


def rejected(result: object, status: int) -> Rejected:
    assert isinstance(result, Rejected), result
    assert result.status == status, result
    return result


def resume(
    state: RoomState, n: int, now: float = T0, last: int | None = None, token: str | None = None
) -> Connected | Rejected:
    return state.connect(
        now,
        session_id=f"sid-{n}",
        token=f"tok-{n}" if token is None else token,
        last_event_id=last,
        fresh=fresh(99),
    )


def events(conn: Connected) -> list[tuple[str, dict[str, Any]]]:
    """Each stream event with its data as JSON (a signal's comes encoded)."""
    return [
        (out.event, loads(out.data) if isinstance(out.data, bytes) else out.data)
        for out in conn.stream_events
    ]


def signal_data(sender: str, payload: dict[str, Any]) -> bytes:
    """A signal event's data as the room sends it."""
    return dumps({"from": sender, "signal": payload})


def deliver(state: RoomState, sid: str, outs: Sequence[Outgoing | Emit], start: int) -> int:
    """Give each entry an id from ``start`` on, as the runtime would; the last id."""
    for i, out in enumerate(outs):
        state.delivered(sid, start + i, out)
    return start + len(outs) - 1


# -- connect ------------------------------------------------------------------------------
def test_first_session_gets_session_then_roster() -> None:
    state = RoomState("lobby", RoomConfig())
    conn = join(state, 1)
    assert (conn.session_id, conn.token, conn.key, conn.resumed) == ("sid-1", "tok-1", 1001, False)
    assert conn.id_floor == 1001 * ID_SPAN
    assert events(conn) == [
        ("session", {"session_id": "sid-1", "token": "tok-1", "room": "lobby", "resumed": False}),
        ("roster", {"peers": ["sid-1"]}),
    ]
    assert conn.effects == []
    assert state.roster() == ["sid-1"]
    assert state.sessions_connected() == ["sid-1"]


def test_joining_broadcasts_roster_to_the_others_only() -> None:
    state = RoomState("r")
    join(state, 1)
    join(state, 2)
    state.disconnected(T0, "sid-2", 0)
    conn = join(state, 3)
    assert events(conn)[1] == ("roster", {"peers": ["sid-1", "sid-2", "sid-3"]})
    # sid-2 is in its grace period (no stream): only sid-1 gets the event.
    assert conn.effects == [Emit("sid-1", "roster", {"peers": ["sid-1", "sid-2", "sid-3"]})]


def test_unknown_session_id_makes_a_new_session_with_a_fresh_id() -> None:
    state = RoomState("r")
    result = state.connect(
        T0, session_id="sid-nobody", token="whatever", last_event_id=None, fresh=fresh(7)
    )
    assert isinstance(result, Connected)
    assert (result.session_id, result.token, result.resumed) == ("sid-7", "tok-7", False)


def test_resume_with_token_keeps_session_and_roster() -> None:
    state = RoomState("r")
    join(state, 1)
    join(state, 2)
    state.disconnected(T0 + 1, "sid-2", 0)
    conn = resume(state, 2, T0 + 2)
    assert isinstance(conn, Connected)
    assert (conn.session_id, conn.token, conn.resumed) == ("sid-2", "tok-2", True)
    assert events(conn)[0][1]["resumed"] is True
    assert conn.effects == []  # peers see nothing
    assert state.roster() == ["sid-1", "sid-2"]
    info = state.session_info("sid-2")
    assert info is not None and info.connected and info.expires_at is None
    assert state.next_alarm() is None


@pytest.mark.parametrize("token", ["tok-1-wrong", "", None])
def test_known_session_with_wrong_or_missing_token_is_403(token: str | None) -> None:
    state = RoomState("r")
    join(state, 1)
    state.disconnected(T0, "sid-1", 0)
    result = state.connect(T0, session_id="sid-1", token=token, last_event_id=None, fresh=fresh(2))
    rejected(result, 403)
    info = state.session_info("sid-1")
    assert info is not None and not info.connected
    assert state.roster() == ["sid-1"]


def test_non_ascii_token_is_rejected_not_an_error() -> None:
    state = RoomState("r")
    join(state, 1)
    rejected(resume(state, 1, token="tök"), 403)


def test_second_stream_replaces_the_first_end_stream_first() -> None:
    state = RoomState("r")
    join(state, 1)
    join(state, 2)
    conn = resume(state, 1)
    assert isinstance(conn, Connected) and conn.resumed
    assert conn.effects == [EndStream("sid-1", "replaced")]


def test_replaced_stream_comes_before_roster_changes_from_expiry() -> None:
    state = RoomState("r", RoomConfig(grace=5))
    join(state, 1)
    join(state, 2)
    join(state, 3)
    state.disconnected(T0, "sid-3", 0)
    conn = resume(state, 1, T0 + 6)
    assert isinstance(conn, Connected)
    assert conn.effects == [
        EndStream("sid-1", "replaced"),
        Emit("sid-2", "roster", {"peers": ["sid-1", "sid-2"]}),
    ]
    assert events(conn)[1] == ("roster", {"peers": ["sid-1", "sid-2"]})


def test_resume_by_last_event_id_alone() -> None:
    state = RoomState("r")
    conn = join(state, 1)
    state.disconnected(T0, "sid-1", conn.id_floor + 3)
    again = state.connect(
        T0 + 1, session_id=None, token=None, last_event_id=conn.id_floor + 3, fresh=fresh(2)
    )
    assert isinstance(again, Connected)
    assert (again.session_id, again.token, again.resumed) == ("sid-1", "tok-1", True)
    assert events(again)[0][1] == {
        "session_id": "sid-1",
        "token": "tok-1",
        "room": "r",
        "resumed": True,
    }


def test_unknown_session_id_with_a_known_last_event_id_resumes_that_session() -> None:
    # A browser's EventSource URL may still name an expired session (as if none was
    # given); its Last-Event-ID names the session it really has.
    state = RoomState("r")
    conn = join(state, 1)
    state.disconnected(T0, "sid-1", conn.id_floor + 3)
    again = state.connect(
        T0 + 1,
        session_id="sid-gone",
        token="tok-gone",
        last_event_id=conn.id_floor + 3,
        fresh=fresh(2),
    )
    assert isinstance(again, Connected)
    assert (again.session_id, again.resumed) == ("sid-1", True)
    assert state.roster() == ["sid-1"]


def test_resume_by_last_event_id_replaces_a_live_stream() -> None:
    state = RoomState("r")
    conn = join(state, 1)
    again = state.connect(
        T0, session_id=None, token=None, last_event_id=conn.id_floor + 1, fresh=fresh(2)
    )
    assert isinstance(again, Connected)
    assert again.effects == [EndStream("sid-1", "replaced")]


@pytest.mark.parametrize("last", [-1, 0, 5, 1001 * ID_SPAN - 1, 1002 * ID_SPAN])
def test_last_event_id_of_no_session_is_ignored(last: int) -> None:
    state = RoomState("r")
    join(state, 1)  # key 1001
    result = state.connect(T0, session_id=None, token=None, last_event_id=last, fresh=fresh(2))
    assert isinstance(result, Connected)
    assert (result.session_id, result.resumed) == ("sid-2", False)
    assert result.id_floor == 1002 * ID_SPAN


def test_last_event_id_of_another_session_gives_no_replay() -> None:
    state = RoomState("r")
    one = join(state, 1)
    join(state, 2)
    emit = the_emit(send(state, 2, 1))
    state.delivered("sid-1", one.id_floor + 5, emit)
    state.disconnected(T0, "sid-2", 0)
    conn = resume(state, 2, last=one.id_floor + 1)
    assert isinstance(conn, Connected)
    assert [e for e, _ in events(conn)] == ["session", "roster"]
    assert conn.id_floor == 1002 * ID_SPAN


def test_fresh_values_already_in_use_are_a_caller_error() -> None:
    state = RoomState("r")
    join(state, 1)
    with pytest.raises(ValueError):
        state.connect(
            T0, session_id=None, token=None, last_event_id=None, fresh=FreshSession("x", "y", 1001)
        )
    with pytest.raises(ValueError):
        state.connect(
            T0, session_id=None, token=None, last_event_id=None, fresh=FreshSession("sid-1", "y", 5)
        )


# -- replay history and event ids ----------------------------------------------------------
def test_last_event_id_replays_only_later_signals_in_order() -> None:
    state = RoomState("r")
    one = join(state, 1)
    join(state, 2)
    base = one.id_floor
    for n in range(4):
        (emit,) = ok(send(state, 2, 1, n=n)).effects
        assert emit == Emit("sid-1", "signal", signal_data("sid-2", {"n": n}), record=True)
        state.delivered("sid-1", base + 10 + n, emit)  # ids 10..13
    state.disconnected(T0, "sid-1", base + 13)
    conn = resume(state, 1, T0 + 1, last=base + 11)
    assert isinstance(conn, Connected)
    assert events(conn) == [
        ("session", {"session_id": "sid-1", "token": "tok-1", "room": "r", "resumed": True}),
        ("roster", {"peers": ["sid-1", "sid-2"]}),
        ("signal", {"from": "sid-2", "signal": {"n": 2}}),
        ("signal", {"from": "sid-2", "signal": {"n": 3}}),
    ]
    assert all(out.record for out in conn.stream_events[2:])
    assert conn.id_floor == base + 13


def test_replayed_signals_are_recorded_again_with_their_new_ids() -> None:
    state = RoomState("r")
    one = join(state, 1)
    join(state, 2)
    base = one.id_floor
    deliver(state, "sid-1", [the_emit(send(state, 2, 1, n=n)) for n in range(2)], base + 3)
    state.disconnected(T0, "sid-1", base + 4)
    conn = resume(state, 1, T0 + 1, last=base + 2)  # saw nothing after id 2
    assert isinstance(conn, Connected)
    deliver(state, "sid-1", conn.stream_events, conn.id_floor + 1)  # ids 5..8
    state.disconnected(T0 + 2, "sid-1", conn.id_floor + 4)
    # It saw the session and roster events of that stream (ids 5, 6), not the signals.
    again = resume(state, 1, T0 + 3, last=conn.id_floor + 2)
    assert isinstance(again, Connected)
    assert [d["signal"]["n"] for e, d in events(again) if e == "signal"] == [0, 1]
    # Having seen everything, nothing is replayed.
    deliver(state, "sid-1", again.stream_events, again.id_floor + 1)
    last = again.id_floor + len(again.stream_events)
    state.disconnected(T0 + 4, "sid-1", last)
    final = resume(state, 1, T0 + 5, last=last)
    assert isinstance(final, Connected)
    assert [e for e, _ in events(final)] == ["session", "roster"]


def test_replay_history_is_bounded_by_replay_limit() -> None:
    state = RoomState("r", RoomConfig(replay_limit=3))
    one = join(state, 1)
    join(state, 2)
    emits = [the_emit(send(state, 2, 1, n=n)) for n in range(5)]
    deliver(state, "sid-1", emits, one.id_floor + 1)
    conn = resume(state, 1, last=one.id_floor)
    assert isinstance(conn, Connected)
    assert [d["signal"]["n"] for e, d in events(conn) if e == "signal"] == [2, 3, 4]


def test_delivered_ignores_unrecorded_events_and_unknown_sessions() -> None:
    state = RoomState("r")
    one = join(state, 1)
    state.delivered("sid-1", one.id_floor + 1, Outgoing("roster", {"peers": []}))
    state.delivered("sid-nobody", 5, Outgoing("signal", {}, record=True))
    info = state.session_info("sid-1")
    assert info is not None and info.replayable == 0 and info.id_hwm == one.id_floor + 1


def test_id_floor_is_the_high_water_mark() -> None:
    state = RoomState("r")
    one = join(state, 1)
    state.disconnected(T0, "sid-1", one.id_floor + 40)
    conn = resume(state, 1, T0 + 1)
    assert isinstance(conn, Connected) and conn.id_floor == one.id_floor + 40
    # A client that saw more than the server remembers (e.g. after a crash) raises it.
    state.disconnected(T0 + 2, "sid-1", 0)
    conn = resume(state, 1, T0 + 3, last=one.id_floor + 70)
    assert isinstance(conn, Connected) and conn.id_floor == one.id_floor + 70


# -- queueing while disconnected -----------------------------------------------------------
def test_signals_to_a_disconnected_peer_are_queued_then_delivered_in_order() -> None:
    state = RoomState("r")
    join(state, 1)
    join(state, 2)
    state.take_writes()
    state.disconnected(T0, "sid-1", 0)
    for n in range(3):
        assert ok(send(state, 2, 1, T0 + 1, n=n)).effects == []
    info = state.session_info("sid-1")
    assert info is not None and info.queued == 3
    puts, _ = state.take_writes()
    assert sorted(k for k in puts if k.startswith("q/")) == [f"q/sid-1/{n:012d}" for n in range(3)]
    conn = resume(state, 1, T0 + 2)
    assert isinstance(conn, Connected)
    assert events(conn)[2:] == [("signal", {"from": "sid-2", "signal": {"n": n}}) for n in range(3)]
    assert [e for e, _ in events(conn)[:2]] == ["session", "roster"]
    assert all(out.record for out in conn.stream_events[2:])
    _, deletes = state.take_writes()
    assert {f"q/sid-1/{n:012d}" for n in range(3)} <= deletes
    info = state.session_info("sid-1")
    assert info is not None and info.queued == 0


def test_replay_comes_before_queued_signals() -> None:
    state = RoomState("r")
    one = join(state, 1)
    join(state, 2)
    state.delivered("sid-1", one.id_floor + 3, the_emit(send(state, 2, 1, n=0)))
    state.disconnected(T0, "sid-1", one.id_floor + 3)
    ok(send(state, 2, 1, n=1))
    conn = resume(state, 1, T0 + 1, last=one.id_floor + 2)
    assert isinstance(conn, Connected)
    assert [d["signal"]["n"] for e, d in events(conn) if e == "signal"] == [0, 1]


def test_full_queue_is_503_and_nothing_is_lost() -> None:
    state = RoomState("r", RoomConfig(queue_limit=2))
    join(state, 1)
    join(state, 2)
    state.disconnected(T0, "sid-1", 0)
    ok(send(state, 2, 1, n=0))
    ok(send(state, 2, 1, n=1))
    state.take_writes()
    full = rejected(send(state, 2, 1, rid="retry-me", n=2), 503)
    assert full.retry_after == 1
    assert state.take_writes() == ({}, set())
    conn = resume(state, 1, T0 + 1)
    assert isinstance(conn, Connected)
    assert [d["signal"]["n"] for e, d in events(conn) if e == "signal"] == [0, 1]
    # The refused request id was not remembered: the retry goes through.
    (emit,) = ok(send(state, 2, 1, rid="retry-me", n=2)).effects
    assert emit.session_id == "sid-1"


def test_queue_limit_zero_never_queues() -> None:
    state = RoomState("r", RoomConfig(queue_limit=0))
    join(state, 1)
    join(state, 2)
    state.disconnected(T0, "sid-1", 0)
    rejected(send(state, 2, 1), 503)


# -- signal ----------------------------------------------------------------------------------
def test_signal_to_a_connected_peer_is_one_emit_and_no_writes() -> None:
    state = RoomState("r")
    join(state, 1)
    join(state, 2)
    state.take_writes()
    payload = {"type": "offer", "sdp": "v=0", "nested": [1, 2.5, None]}
    result = state.signal(
        T0, sender="sid-1", token="tok-1", to="sid-2", payload=dumps(payload), request_id=None
    )
    (emit,) = ok(result).effects
    assert emit == Emit("sid-2", "signal", signal_data("sid-1", payload), record=True)
    assert state.take_writes() == ({}, set())


def test_signal_to_yourself_is_allowed() -> None:
    state = RoomState("r")
    join(state, 1)
    (emit,) = ok(send(state, 1, 1)).effects
    assert isinstance(emit, Emit) and emit.session_id == "sid-1"


@pytest.mark.parametrize(("sender", "token"), [("sid-9", "tok-9"), ("sid-1", "tok-2")])
def test_signal_from_unknown_sender_or_with_wrong_token_is_403(sender: str, token: str) -> None:
    state = RoomState("r")
    join(state, 1)
    join(state, 2)
    result = state.signal(
        T0, sender=sender, token=token, to="sid-2", payload=b"{}", request_id=None
    )
    rejected(result, 403)


def test_check_order_403_before_429_before_404_before_503() -> None:
    state = RoomState("r", RoomConfig(rate_burst=2, rate_refill=1, queue_limit=0))
    join(state, 1)
    join(state, 2)
    state.disconnected(T0, "sid-2", 0)
    rejected(send(state, 1, 2), 503)  # spends one
    rejected(send(state, 1, 3), 404)  # spends the other: unknown recipient, bucket not empty
    # Bucket empty, unknown recipient: 429 wins over 404.
    rejected(send(state, 1, 3), 429)
    # Wrong token with an empty bucket: 403 wins over 429.
    result = state.signal(
        T0, sender="sid-1", token="nope", to="sid-3", payload=b"{}", request_id=None
    )
    rejected(result, 403)
    # After a refill: unknown recipient is 404 before the full queue would matter.
    rejected(send(state, 1, 3, T0 + 1), 404)
    rejected(send(state, 1, 2, T0 + 2), 503)


def test_rate_limit_refills_over_time() -> None:
    state = RoomState("r", RoomConfig(rate_burst=3, rate_refill=2))
    join(state, 1)
    for _ in range(3):
        ok(send(state, 1, 1, T0))
    limited = rejected(send(state, 1, 1, T0), 429)
    assert limited.retry_after == 1
    rejected(send(state, 1, 1, T0 + 0.25), 429)  # half a token
    ok(send(state, 1, 1, T0 + 0.5))  # one token back
    rejected(send(state, 1, 1, T0 + 0.5), 429)
    # Refill caps at the burst.
    for _ in range(3):
        ok(send(state, 1, 1, T0 + 100))
    rejected(send(state, 1, 1, T0 + 100), 429)


def test_rejected_attempts_build_no_debt() -> None:
    state = RoomState("r", RoomConfig(rate_burst=1, rate_refill=1))
    join(state, 1)
    ok(send(state, 1, 1, T0))
    for _ in range(10):
        rejected(send(state, 1, 1, T0 + 0.5), 429)
    ok(send(state, 1, 1, T0 + 1))


@pytest.mark.parametrize(
    ("refill", "elapsed", "expected"),
    [(50, 0, 1), (1, 0, 1), (1, 0.5, 1), (0.5, 0, 2), (0.25, 0, 4), (0.25, 1.5, 3), (0.3, 0, 4)],
)
def test_retry_after_is_whole_seconds_until_a_token(
    refill: float, elapsed: float, expected: int
) -> None:
    state = RoomState("r", RoomConfig(rate_burst=1, rate_refill=refill))
    join(state, 1)
    ok(send(state, 1, 1, T0))
    assert rejected(send(state, 1, 1, T0 + elapsed), 429).retry_after == expected


def test_every_authenticated_attempt_spends_a_token() -> None:
    state = RoomState("r", RoomConfig(rate_burst=2, rate_refill=1))
    join(state, 1)
    rejected(send(state, 1, 5), 404)
    ok(send(state, 1, 1, rid="a"))
    rejected(send(state, 1, 1, rid="a"), 429)  # even a duplicate would have spent one
    # Unauthenticated attempts spend nothing of the real session's bucket.
    state2 = RoomState("r", RoomConfig(rate_burst=1, rate_refill=1))
    join(state2, 1)
    for _ in range(5):
        result = state2.signal(
            T0, sender="sid-1", token="bad", to="sid-1", payload=b"{}", request_id=None
        )
        rejected(result, 403)
    ok(send(state2, 1, 1))


def test_duplicate_request_id_is_accepted_and_delivers_nothing() -> None:
    state = RoomState("r")
    join(state, 1)
    join(state, 2)
    assert len(ok(send(state, 1, 2, rid="abc")).effects) == 1
    assert ok(send(state, 1, 2, rid="abc")).effects == []
    # Another sender's id space is its own; no id means always new.
    assert len(ok(send(state, 2, 1, rid="abc")).effects) == 1
    assert len(ok(send(state, 1, 2)).effects) == 1
    assert len(ok(send(state, 1, 2)).effects) == 1


def test_duplicate_of_a_queued_signal_is_not_queued_again() -> None:
    state = RoomState("r")
    join(state, 1)
    join(state, 2)
    state.disconnected(T0, "sid-2", 0)
    ok(send(state, 1, 2, rid="x"))
    ok(send(state, 1, 2, rid="x"))
    info = state.session_info("sid-2")
    assert info is not None and info.queued == 1


def test_duplicate_is_answered_even_after_the_recipient_left() -> None:
    state = RoomState("r")
    join(state, 1)
    join(state, 2)
    ok(send(state, 1, 2, rid="x"))
    ok(state.leave(T0, sender="sid-2", token="tok-2"))
    assert ok(send(state, 1, 2, rid="x")).effects == []
    rejected(send(state, 1, 2, rid="y"), 404)


def test_idempotency_window_keeps_only_the_latest_ids() -> None:
    state = RoomState("r", RoomConfig(idempotency_window=2))
    join(state, 1)
    for rid in ["a", "b", "c"]:
        ok(send(state, 1, 1, rid=rid))
    assert ok(send(state, 1, 1, rid="c")).effects == []
    assert ok(send(state, 1, 1, rid="b")).effects == []
    assert len(ok(send(state, 1, 1, rid="a")).effects) == 1  # forgotten


# -- presence, expiry, alarms ------------------------------------------------------------------
def test_disconnect_starts_grace_and_sets_the_alarm() -> None:
    state = RoomState("r", RoomConfig(grace=30))
    join(state, 1)
    join(state, 2)
    assert state.next_alarm() is None
    assert state.disconnected(T0 + 1, "sid-1", 0) == []
    assert state.disconnected(T0 + 5, "sid-2", 0) == []
    assert state.next_alarm() == T0 + 31
    assert state.roster() == ["sid-1", "sid-2"]  # still there during grace
    # A second report of the same drop does not extend the grace period.
    state.disconnected(T0 + 10, "sid-1", 0)
    info = state.session_info("sid-1")
    assert info is not None and info.expires_at == T0 + 31
    assert state.disconnected(T0, "sid-nobody", 0) == []


def test_expire_removes_sessions_whose_grace_ended() -> None:
    state = RoomState("r", RoomConfig(grace=30))
    join(state, 1)
    join(state, 2)
    join(state, 3)
    state.disconnected(T0, "sid-2", 0)
    state.disconnected(T0 + 10, "sid-3", 0)
    assert state.expire(T0 + 29.9) == []
    assert state.expire(T0 + 30) == [Emit("sid-1", "roster", {"peers": ["sid-1", "sid-3"]})]
    assert state.next_alarm() == T0 + 40
    assert state.expire(T0 + 100) == [Emit("sid-1", "roster", {"peers": ["sid-1"]})]
    assert state.next_alarm() is None
    assert state.roster() == ["sid-1"]


def test_expired_token_stops_working() -> None:
    state = RoomState("r", RoomConfig(grace=30))
    join(state, 1)
    join(state, 2)
    state.disconnected(T0, "sid-2", 0)
    ok(send(state, 1, 2))
    state.expire(T0 + 30)
    rejected(send(state, 2, 1, T0 + 31), 403)
    rejected(state.leave(T0 + 31, sender="sid-2", token="tok-2"), 403)
    rejected(send(state, 1, 2, T0 + 31), 404)
    conn = state.connect(
        T0 + 31, session_id="sid-2", token="tok-2", last_event_id=None, fresh=fresh(3)
    )
    assert isinstance(conn, Connected)
    assert (conn.session_id, conn.resumed) == ("sid-3", False)
    assert [e for e, _ in events(conn)[2:]] == []  # the old queue is gone


def test_grace_ending_counts_even_before_the_alarm_is_handled() -> None:
    state = RoomState("r", RoomConfig(grace=30))
    join(state, 1)
    join(state, 2)
    state.disconnected(T0, "sid-2", 0)
    result = rejected(send(state, 1, 2, T0 + 30), 404)
    assert result.effects == [Emit("sid-1", "roster", {"peers": ["sid-1"]})]
    assert state.roster() == ["sid-1"]
    assert state.expire(T0 + 30) == []


def test_roster_changes_of_one_call_give_one_roster_event() -> None:
    state = RoomState("r", RoomConfig(grace=30))
    join(state, 1)
    join(state, 2)
    state.disconnected(T0, "sid-2", 0)
    conn = join(state, 3, T0 + 31)
    assert conn.effects == [Emit("sid-1", "roster", {"peers": ["sid-1", "sid-3"]})]


def test_grace_zero_expires_at_the_next_call() -> None:
    state = RoomState("r", RoomConfig(grace=0))
    join(state, 1)
    join(state, 2)
    state.disconnected(T0, "sid-2", 0)
    assert state.next_alarm() == T0
    assert state.expire(T0) == [Emit("sid-1", "roster", {"peers": ["sid-1"]})]


# -- leave ------------------------------------------------------------------------------------
def test_leave_ends_the_session_at_once() -> None:
    state = RoomState("r")
    join(state, 1)
    join(state, 2)
    join(state, 3)
    state.disconnected(T0, "sid-3", 0)
    result = ok(state.leave(T0, sender="sid-1", token="tok-1"))
    assert result.effects == [
        EndStream("sid-1", "left"),
        Emit("sid-2", "roster", {"peers": ["sid-2", "sid-3"]}),
    ]
    assert state.roster() == ["sid-2", "sid-3"]
    rejected(send(state, 1, 2), 403)
    rejected(state.leave(T0, sender="sid-1", token="tok-1"), 403)
    rejected(send(state, 2, 1), 404)


def test_leave_while_disconnected_has_no_stream_to_end() -> None:
    state = RoomState("r")
    join(state, 1)
    join(state, 2)
    state.disconnected(T0, "sid-1", 0)
    ok(send(state, 2, 1))
    state.take_writes()
    result = ok(state.leave(T0, sender="sid-1", token="tok-1"))
    assert result.effects == [Emit("sid-2", "roster", {"peers": ["sid-2"]})]
    assert state.next_alarm() is None
    puts, deletes = state.take_writes()
    assert puts == {}
    assert {"s/sid-1", "v/sid-1", "q/sid-1/000000000000"} <= deletes


@pytest.mark.parametrize(("sender", "token"), [("sid-9", "tok-9"), ("sid-1", "tok-2")])
def test_leave_with_unknown_sender_or_wrong_token_is_403(sender: str, token: str) -> None:
    state = RoomState("r")
    join(state, 1)
    join(state, 2)
    rejected(state.leave(T0, sender=sender, token=token), 403)
    assert state.roster() == ["sid-1", "sid-2"]


def test_last_session_leaving_empties_the_room() -> None:
    state = RoomState("r")
    join(state, 1)
    assert ok(state.leave(T0, sender="sid-1", token="tok-1")).effects == [
        EndStream("sid-1", "left")
    ]
    assert state.roster() == [] and state.sessions_connected() == []


# -- logging safety ---------------------------------------------------------------------------
def test_tokens_do_not_appear_in_reprs() -> None:
    state = RoomState("r")
    conn = join(state, 1)
    assert "tok-1" not in repr(conn)
    assert "tok-1" not in repr(fresh(1))
    assert "tok-1" not in repr(state.session_info("sid-1"))


# -- room size and refused new sessions -------------------------------------------------------
def test_a_full_room_refuses_new_sessions_with_409() -> None:
    state = RoomState("r", RoomConfig(max_peers=2))
    join(state, 1)
    join(state, 2)
    state.take_writes()
    result = rejected(
        state.connect(T0, session_id=None, token=None, last_event_id=None, fresh=fresh(3)),
        ROOM_FULL,
    )
    assert "full" in result.reason and result.retry_after is None and result.effects == []
    assert state.roster() == ["sid-1", "sid-2"]
    assert state.take_writes() == ({}, set())  # nothing of the refused session is kept
    # An unknown session id or event id asks for a new session too.
    rejected(resume(state, 9), ROOM_FULL)
    rejected(
        state.connect(T0, session_id=None, token=None, last_event_id=5, fresh=fresh(3)), ROOM_FULL
    )


def test_a_full_room_still_lets_its_sessions_resume() -> None:
    state = RoomState("r", RoomConfig(max_peers=2))
    first = join(state, 1)
    join(state, 2)
    state.disconnected(T0, "sid-2", 0)  # a session in its grace period holds its seat
    rejected(
        state.connect(T0, session_id=None, token=None, last_event_id=None, fresh=fresh(3)), 409
    )
    assert isinstance(resume(state, 2, T0 + 1), Connected)
    assert isinstance(resume(state, 1, T0 + 1), Connected)  # a replacing stream too
    by_id = state.connect(
        T0 + 1, session_id=None, token=None, last_event_id=first.id_floor + 1, fresh=fresh(3)
    )
    assert isinstance(by_id, Connected) and by_id.resumed


def test_a_seat_frees_when_a_session_leaves_or_expires() -> None:
    state = RoomState("r", RoomConfig(max_peers=2, grace=30))
    join(state, 1)
    join(state, 2)
    ok(state.leave(T0, sender="sid-1", token="tok-1"))
    join(state, 3)
    state.disconnected(T0, "sid-3", 0)
    rejected(
        state.connect(T0, session_id=None, token=None, last_event_id=None, fresh=fresh(4)), 409
    )
    # The expiry that frees the seat happens in the same call, with its roster event.
    conn = join(state, 4, T0 + 30)
    assert state.roster() == ["sid-2", "sid-4"]
    assert conn.effects == [Emit("sid-2", "roster", {"peers": ["sid-2", "sid-4"]})]


def test_a_refused_new_session_still_reports_an_expiry_meanwhile() -> None:
    state = RoomState("r", RoomConfig(max_peers=2, grace=30))
    join(state, 1)
    join(state, 2)
    state.disconnected(T0, "sid-2", 0)
    refusal = Rejected(403, "ticket needed")
    result = state.connect(
        T0 + 30, session_id=None, token=None, last_event_id=None, fresh=fresh(3), refuse_new=refusal
    )
    result = rejected(result, 403)
    assert result.reason == "ticket needed"
    assert result.effects == [Emit("sid-1", "roster", {"peers": ["sid-1"]})]


def test_refuse_new_comes_before_a_full_room_and_spares_resumption() -> None:
    state = RoomState("r", RoomConfig(max_peers=1))
    join(state, 1)
    refusal = Rejected(429, "slow down", retry_after=7)
    result = state.connect(
        T0, session_id=None, token=None, last_event_id=None, fresh=fresh(2), refuse_new=refusal
    )
    assert rejected(result, 429) == refusal
    resumed = state.connect(
        T0,
        session_id="sid-1",
        token="tok-1",
        last_event_id=None,
        fresh=fresh(2),
        refuse_new=refusal,
    )
    assert isinstance(resumed, Connected) and resumed.resumed
    # A wrong token is still a 403 of its own, not the caller's refusal.
    wrong = state.connect(
        T0,
        session_id="sid-1",
        token="tok-x",
        last_event_id=None,
        fresh=fresh(2),
        refuse_new=refusal,
    )
    assert rejected(wrong, 403).reason == "wrong or missing token"


# -- tokens are compared in constant time -------------------------------------------------------
def test_every_token_check_is_hmac_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision is compare_digest's: a spy that always says yes lets a wrong token
    through, one that always says no stops the right one."""
    state = RoomState("r")
    join(state, 1)
    join(state, 2)
    calls: list[tuple[bytes, bytes]] = []
    verdict = True

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return verdict

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert isinstance(resume(state, 1, token="forged"), Connected)
    ok(state.signal(T0, sender="sid-1", token="forged", to="sid-2", payload=b"{}", request_id=None))
    assert calls == [(b"forged", b"tok-1"), (b"forged", b"tok-1")]
    verdict = False
    rejected(resume(state, 2), 403)
    rejected(send(state, 2, 1), 403)
    rejected(state.leave(T0, sender="sid-2", token="tok-2"), 403)
    assert calls[2:] == [(b"tok-2", b"tok-2")] * 3
    verdict = True
    ok(state.leave(T0, sender="sid-2", token="not-it"))
    assert state.roster() == ["sid-1"]
