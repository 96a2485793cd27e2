"""RoomState's byte budgets: signals are kept as bytes, counted, and bounded per session
and per room (the oldest replay history goes first, then new queued signals get 503)."""

from __future__ import annotations

from roomkeeper.jsonutil import dumps
from roomkeeper_actors.signaling.budget import MemoryAccount
from roomkeeper_actors.signaling.state import (
    ID_SPAN,
    Accepted,
    Connected,
    Emit,
    FreshSession,
    Rejected,
    RoomConfig,
    RoomState,
)

T0 = 1_700_000_000.0
PAYLOAD = dumps({"x": [{}] * 40})  # 163 bytes, the shape that amplified when parsed
DATA = len(b'{"from":"sid-1","signal":') + len(PAYLOAD) + 1  # 189 bytes as sent


def join(state: RoomState, n: int) -> Connected:
    fresh = FreshSession(f"sid-{n}", f"tok-{n}", n)
    result = state.connect(T0, session_id=None, token=None, last_event_id=None, fresh=fresh)
    assert isinstance(result, Connected)
    return result


def send(state: RoomState, sender: int, to: int, now: float = T0) -> Accepted | Rejected:
    return state.signal(
        now,
        sender=f"sid-{sender}",
        token=f"tok-{sender}",
        to=f"sid-{to}",
        payload=PAYLOAD,
        request_id=None,
    )


def deliver(state: RoomState, to: int, result: Accepted | Rejected, event_id: int) -> None:
    assert isinstance(result, Accepted), result
    (emit,) = result.effects
    assert isinstance(emit, Emit) and isinstance(emit.data, bytes)
    state.delivered(f"sid-{to}", to * ID_SPAN + event_id, emit)


def test_a_signal_is_held_as_the_bytes_it_is_sent_as() -> None:
    state = RoomState("r")
    join(state, 1)
    join(state, 2)
    result = send(state, 1, 2)
    assert isinstance(result, Accepted)
    (emit,) = result.effects
    assert isinstance(emit, Emit)
    assert emit.data == b'{"from":"sid-1","signal":' + PAYLOAD + b"}"
    assert len(emit.data) == DATA
    deliver(state, 2, result, 1)
    assert state.held == DATA
    info = state.session_info("sid-2")
    assert info is not None and info.held == DATA and info.replayable == 1


def test_past_the_session_budget_the_oldest_history_goes_first() -> None:
    state = RoomState("r", RoomConfig(session_bytes=3 * DATA))
    join(state, 1)
    join(state, 2)
    for n in range(1, 6):
        deliver(state, 2, send(state, 1, 2), n)
    state.take_writes()
    deliver(state, 2, send(state, 1, 2), 6)
    puts, deletes = state.take_writes()
    assert set(puts) == {f"h/sid-2/{2 * ID_SPAN + 6}"}
    assert deletes == {f"h/sid-2/{2 * ID_SPAN + 3}"}
    info = state.session_info("sid-2")
    assert info is not None and info.replayable == 3 and state.held == 3 * DATA


def test_a_queue_past_the_session_budget_drops_history_then_refuses() -> None:
    state = RoomState("r", RoomConfig(session_bytes=3 * DATA))
    join(state, 1)
    join(state, 2)
    for n in range(1, 3):
        deliver(state, 2, send(state, 1, 2), n)
    state.disconnected(T0, "sid-2", 2 * ID_SPAN + 2)
    for _ in range(3):  # history (2 entries) makes room for the queue
        assert isinstance(send(state, 1, 2), Accepted)
    info = state.session_info("sid-2")
    assert info is not None and (info.queued, info.replayable) == (3, 0)
    refused = send(state, 1, 2)
    assert isinstance(refused, Rejected) and (refused.status, refused.retry_after) == (503, 1)
    assert state.held == 3 * DATA


def test_past_the_room_budget_the_oldest_history_of_any_session_goes() -> None:
    state = RoomState("r", RoomConfig(room_bytes=4 * DATA))
    for n in (1, 2, 3):
        join(state, n)
    deliver(state, 2, send(state, 1, 2), 10)  # the oldest (its time part is the lowest)
    deliver(state, 3, send(state, 1, 3), 20)
    deliver(state, 2, send(state, 1, 2), 30)
    deliver(state, 3, send(state, 1, 3), 40)
    state.take_writes()
    deliver(state, 3, send(state, 1, 3), 50)
    _, deletes = state.take_writes()
    assert deletes == {f"h/sid-2/{2 * ID_SPAN + 10}"}
    assert state.held == 4 * DATA
    state.disconnected(T0, "sid-2", 0)
    for _ in range(4):  # everyone's history makes room for sid-2's queue
        assert isinstance(send(state, 1, 2), Accepted)
    assert isinstance(send(state, 1, 2), Rejected)
    assert [state.session_info(s).replayable for s in ("sid-2", "sid-3")] == [0, 0]  # type: ignore[union-attr]


def test_ending_a_session_frees_its_bytes() -> None:
    state = RoomState("r")
    join(state, 1)
    join(state, 2)
    deliver(state, 2, send(state, 1, 2), 1)
    assert state.held == DATA
    assert isinstance(state.leave(T0, sender="sid-2", token="tok-2"), Accepted)
    assert state.held == 0


def test_the_process_account_sums_what_each_room_reports() -> None:
    account = MemoryAccount(1000)
    account.report("a", 500)
    account.report("b", 399)
    assert (account.held, account.near, account.full) == (899, False, False)
    account.report("b", 400)
    assert (account.held, account.near, account.full) == (900, True, False)
    account.report("a", 600)
    assert account.full
    account.report("a", 0)  # hibernated
    account.report("b", 0)
    assert (account.held, account.near) == (0, False)
