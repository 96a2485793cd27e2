"""RoomState's storage: what it writes, and restoring an equivalent state from it."""

from __future__ import annotations

import json
from typing import Any

import orjson

from roomkeeper.jsonutil import dumps, loads
from roomkeeper_actors.signaling.state import (
    ID_SPAN,
    Accepted,
    Connected,
    Emit,
    FreshSession,
    RoomConfig,
    RoomState,
)

T0 = 1_700_000_000.0
KEY = 2**62  # a key as large as the actor's: ids far beyond 64 bits


def fresh(n: int) -> FreshSession:
    return FreshSession(f"sid-{n}", f"tok-{n}", KEY + n)


def join(state: RoomState, n: int, now: float = T0) -> Connected:
    result = state.connect(now, session_id=None, token=None, last_event_id=None, fresh=fresh(n))
    assert isinstance(result, Connected)
    return result


def send(state: RoomState, sender: int, to: int, now: float = T0, **kw: Any) -> Accepted:
    result = state.signal(
        now,
        sender=f"sid-{sender}",
        token=f"tok-{sender}",
        to=f"sid-{to}",
        payload=dumps(kw.pop("payload", {"n": 0})),
        request_id=kw.pop("rid", None),
    )
    assert isinstance(result, Accepted), result
    return result


def the_emit(result: Accepted) -> Emit:
    (emit,) = result.effects
    assert isinstance(emit, Emit)
    return emit


def stored(value: Any) -> bytes:
    """A value as storage keeps it: JSON text (a signal's bytes are JSON text already)."""
    raw = value if isinstance(value, bytes) else dumps(value)
    json.loads(raw)  # values must be plain JSON
    return raw


class Store:
    """A key/value store that applies ``take_writes`` batches like the runtime does."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def commit(self, state: RoomState) -> None:
        puts, deletes = state.take_writes()
        assert not set(puts) & deletes
        for key in deletes:
            self.data.pop(key, None)
        self.put_all(puts)

    def put_all(self, puts: dict[str, Any]) -> None:
        for key, value in puts.items():
            self.data[key] = stored(value)


def signals(conn: Connected) -> list[Any]:
    """The payloads of the signals a connect replays, parsed."""
    return [loads(o.data)["signal"] for o in conn.stream_events if o.event == "signal"]


def summary(state: RoomState) -> list[Any]:
    infos = [state.session_info(sid) for sid in state.roster()]
    return [(i.session_id, i.connected, i.expires_at, i.queued, i.id_hwm) for i in infos if i]


def busy_room(store: Store) -> RoomState:
    state = RoomState("r", RoomConfig(grace=30))
    for n in range(1, 6):
        join(state, n)
    ok_leave = state.leave(T0, sender="sid-2", token="tok-2")
    assert isinstance(ok_leave, Accepted)
    state.disconnected(T0 + 1, "sid-3", (KEY + 3) * ID_SPAN + 17)
    state.disconnected(T0 + 2, "sid-5", 0)
    for n in range(3):
        send(state, 1, 3, payload={"n": n})
    send(state, 4, 5, payload={"big": 2**70})
    store.commit(state)
    return state


def test_restore_from_writes_gives_an_equivalent_state() -> None:
    store = Store()
    state = busy_room(store)
    again = RoomState.restore("r", RoomConfig(grace=30), store.data)
    assert again.roster() == state.roster() == ["sid-1", "sid-3", "sid-4", "sid-5"]
    assert summary(again) == summary(state)
    assert again.sessions_connected() == ["sid-1", "sid-4"]
    assert again.next_alarm() == T0 + 31
    assert again.take_writes() == ({}, set())
    # Tokens still work (and only they), queues come out in order, hwm holds.
    bad = again.connect(
        T0 + 3, session_id="sid-3", token="tok-1", last_event_id=None, fresh=fresh(9)
    )
    assert not isinstance(bad, Connected) and bad.status == 403
    conn = again.connect(
        T0 + 3, session_id="sid-3", token="tok-3", last_event_id=None, fresh=fresh(9)
    )
    assert isinstance(conn, Connected) and conn.resumed
    assert conn.id_floor == (KEY + 3) * ID_SPAN + 17
    assert signals(conn) == [{"n": 0}, {"n": 1}, {"n": 2}]
    conn5 = again.connect(
        T0 + 3, session_id="sid-5", token="tok-5", last_event_id=None, fresh=fresh(9)
    )
    assert isinstance(conn5, Connected)
    assert loads(conn5.stream_events[2].data) == {"from": "sid-4", "signal": {"big": 2**70}}


def test_join_order_survives_restore_and_new_sessions_come_last() -> None:
    store = Store()
    state = busy_room(store)
    again = RoomState.restore("r", None, dict(reversed(list(store.data.items()))))
    assert again.roster() == state.roster()
    join(again, 7)
    assert again.roster() == ["sid-1", "sid-3", "sid-4", "sid-5", "sid-7"]


def test_queued_signals_keep_order_across_restores() -> None:
    store = Store()
    state = RoomState("r")
    join(state, 1)
    join(state, 2)
    state.disconnected(T0, "sid-2", 0)
    send(state, 1, 2, payload={"n": 0})
    store.commit(state)
    state = RoomState.restore("r", None, store.data)
    send(state, 1, 2, payload={"n": 1})
    store.commit(state)
    state = RoomState.restore("r", None, store.data)
    conn = state.connect(T0, session_id="sid-2", token="tok-2", last_event_id=None, fresh=fresh(9))
    assert isinstance(conn, Connected)
    assert signals(conn) == [{"n": 0}, {"n": 1}]
    store.commit(state)
    assert not [k for k in store.data if k.startswith("q/")]


def test_ended_sessions_leave_nothing_in_storage() -> None:
    store = Store()
    state = busy_room(store)
    store.put_all(state.volatile_writes())
    state.leave(T0 + 5, sender="sid-1", token="tok-1")
    state.expire(T0 + 100)
    store.commit(state)
    assert sorted(store.data) == ["s/sid-4", "v/sid-4"]
    state.leave(T0 + 101, sender="sid-4", token="tok-4")
    store.commit(state)
    assert store.data == {}


def test_a_delivered_signal_writes_one_history_entry_as_sent() -> None:
    store = Store()
    state = RoomState("r")
    one = join(state, 1)
    join(state, 2)
    store.commit(state)
    emit = the_emit(send(state, 2, 1))
    assert state.take_writes() == ({}, set())  # nothing until it has an id
    state.delivered("sid-1", one.id_floor + 5, emit)
    assert state.take_writes() == ({f"h/sid-1/{one.id_floor + 5}": emit.data}, set())


def test_volatile_writes_bring_back_history_request_ids_and_hwm() -> None:
    store = Store()
    state = RoomState("r")
    one = join(state, 1)
    join(state, 2)
    for n in range(3):
        emit = the_emit(send(state, 2, 1, payload={"n": n}, rid=f"req-{n}"))
        assert isinstance(emit, Emit)
        state.delivered("sid-1", one.id_floor + 10 + n, emit)
    store.commit(state)
    store.put_all(state.volatile_writes())
    again = RoomState.restore("r", None, store.data)
    info = again.session_info("sid-1")
    assert info is not None and info.replayable == 3 and info.id_hwm == one.id_floor + 12
    # Request ids: a retry is a duplicate.
    assert send(again, 2, 1, rid="req-1").effects == []
    # History: replay after id 10.
    again.disconnected(T0 + 1, "sid-1", one.id_floor + 12)
    conn = again.connect(
        T0 + 2, session_id=None, token=None, last_event_id=one.id_floor + 10, fresh=fresh(9)
    )
    assert isinstance(conn, Connected) and conn.session_id == "sid-1"
    assert signals(conn) == [{"n": 1}, {"n": 2}]


def test_history_request_ids_and_hwm_survive_without_volatile_writes() -> None:
    """What a crash leaves: only the writes committed with each answer."""
    store = Store()
    state = RoomState("r")
    one = join(state, 1)
    join(state, 2)
    for n in range(3):
        emit = the_emit(send(state, 2, 1, payload={"n": n}, rid=f"req/{n}\u00e9"))
        state.delivered("sid-1", one.id_floor + 10 + n, emit)
        store.commit(state)
    again = RoomState.restore("r", None, store.data)
    info = again.session_info("sid-1")
    assert info is not None and info.replayable == 3 and info.id_hwm == one.id_floor + 12
    assert send(again, 2, 1, rid="req/1\u00e9").effects == []
    again.disconnected(T0 + 1, "sid-1", 0)
    conn = again.connect(
        T0 + 2, session_id=None, token=None, last_event_id=one.id_floor + 10, fresh=fresh(9)
    )
    assert isinstance(conn, Connected) and conn.id_floor == one.id_floor + 12
    assert signals(conn) == [{"n": 1}, {"n": 2}]


def test_restored_rate_buckets_are_full() -> None:
    store = Store()
    config = RoomConfig(rate_burst=2, rate_refill=1)
    state = RoomState("r", config)
    join(state, 1)
    send(state, 1, 1)
    send(state, 1, 1)
    store.commit(state)
    again = RoomState.restore("r", config, store.data)
    send(again, 1, 1)
    send(again, 1, 1)


def test_restore_limits_history_and_request_ids_to_the_config() -> None:
    store = Store()
    state = RoomState("r")
    one = join(state, 1)
    for n in range(5):
        emit = the_emit(send(state, 1, 1, payload={"n": n}, rid=f"r{n}"))
        assert isinstance(emit, Emit)
        state.delivered("sid-1", one.id_floor + 1 + n, emit)
    store.commit(state)
    store.put_all(state.volatile_writes())
    small = RoomConfig(replay_limit=2, idempotency_window=2)
    again = RoomState.restore("r", small, store.data)
    info = again.session_info("sid-1")
    assert info is not None and info.replayable == 2
    assert send(again, 1, 1, rid="r4").effects == []
    assert len(send(again, 1, 1, rid="r2").effects) == 1


def test_restore_deletes_leftovers_of_ended_sessions_and_ignores_foreign_keys() -> None:
    records = {
        "q/sid-gone/000000000000": b'{"from":"x","signal":{}}',
        "h/sid-gone/12": b'{"from":"x","signal":{}}',
        "v/sid-gone": dumps({"hwm": "0", "history": [], "requests": []}),
        "other/thing": b"1",
    }
    state = RoomState.restore("r", None, records)
    assert state.roster() == []
    assert state.take_writes() == ({}, {"q/sid-gone/000000000000", "h/sid-gone/12", "v/sid-gone"})


def test_written_values_are_plain_json_and_ids_fit_any_codec() -> None:
    store = Store()
    state = busy_room(store)
    state.delivered("sid-1", (KEY + 1) * ID_SPAN + 1, the_emit(send(state, 4, 1)))
    store.put_all(state.volatile_writes())
    for key, raw in store.data.items():
        value = json.loads(raw)
        if key.startswith(("s/", "v/")):
            # Our own numbers (keys, event ids) stay within what orjson accepts; only a
            # client's payload may need the runtime's big-integer fallback.
            assert orjson.loads(orjson.dumps(value)) == value, key


def test_without_durable_history_a_delivery_writes_nothing_until_hibernation() -> None:
    """``--durable-signals off``: history lives in memory, saved by volatile_writes."""
    store = Store()
    config = RoomConfig(durable_history=False, replay_limit=2)
    state = RoomState("r", config)
    one = join(state, 1)
    join(state, 2)
    store.commit(state)
    for n in range(3):
        emit = the_emit(send(state, 2, 1, payload={"n": n}, rid=f"q{n}"))
        state.delivered("sid-1", one.id_floor + 1 + n, emit)
        assert state.take_writes() == ({}, set())  # nothing, trimming included
    store.put_all(state.volatile_writes())
    assert len([k for k in store.data if k.startswith("h/")]) == 2
    assert not [k for k in state.volatile_writes() if k.startswith("h/")]  # stored now
    emit = the_emit(send(state, 2, 1, payload={"n": 3}))
    state.delivered("sid-1", one.id_floor + 4, emit)
    _, deletes = state.take_writes()  # the oldest stored entry leaves the history
    assert deletes == {k for k in store.data if k.startswith(f"h/sid-1/{one.id_floor + 2}")}
    again = RoomState.restore("r", config, store.data)
    info = again.session_info("sid-1")
    assert info is not None and info.replayable == 2
