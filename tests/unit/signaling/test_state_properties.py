"""Random traffic against RoomState with a fake runtime and fake clients (hypothesis).

The machine keeps its own model of what the protocol promises (who is live, in which
order, whose token works, what each session must receive) and a fake runtime that
gives every event the next id of its stream, as the real one does. Clients receive
their stream's events only when pumped, and a dropped stream loses what was unread,
so replay after ``Last-Event-ID`` is exercised as a browser would exercise it.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import event as note_event
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from roomkeeper.jsonutil import dumps, loads
from roomkeeper_actors.signaling import storage
from roomkeeper_actors.signaling.state import (
    ID_SPAN,
    ROOM_FULL,
    Accepted,
    Connected,
    Effect,
    Emit,
    EndStream,
    FreshSession,
    Rejected,
    RoomConfig,
    RoomState,
)

# No rate limit here (unit tests cover it); a small queue so that 503 happens; history
# and request-id windows big enough that nothing is forgotten within one run. Each run
# lets a room hold as many sessions as there are clients, or one fewer (see ``cap``), so
# that full rooms happen.
CONFIG = RoomConfig(
    grace=10.0,
    queue_limit=2,
    rate_burst=1e12,
    rate_refill=1.0,
    replay_limit=100_000,
    idempotency_window=100_000,
    max_peers=3,
)
REFUSED = Rejected(403, "no ticket")
PICK = st.integers(0, 99)
DT = st.sampled_from([0.0, 0.0, 0.0, 0.001, 1.0, 1.0, 4.0, 11.0])
MODES = st.sampled_from(["token", "token", "no_last_id", "last_id_only", "wrong_token"])


@attrs.define(eq=False)
class Stream:
    """A stream as the runtime holds it: its id counter and what the client has not read."""

    sid: str
    last_id: int
    owner: Client
    pending: list[tuple[int, str, dict[str, Any]]] = attrs.Factory(list)
    last_roster: list[str] | None = None


@attrs.define(eq=False)
class Client:
    """A browser tab: the last session it was given and its open stream, if any."""

    sid: str | None = None
    token: str | None = None
    last_seen: int | None = None
    stream: Stream | None = None


@attrs.define(eq=False)
class Model:
    """What the protocol says about one live session."""

    token: str
    key: int
    connected: bool = True
    expires_at: float | None = None
    queue: list[int] = attrs.Factory(list)  # signal numbers waiting for a stream
    expected: list[int] = attrs.Factory(list)  # every signal accepted for it, in order
    excused: set[int] = attrs.Factory(set)  # lost in ways the protocol allows
    rids: set[str] = attrs.Factory(set)  # request ids accepted from it
    saved_rids: set[str] = attrs.Factory(set)  # those in the last volatile snapshot
    rid_to: dict[str, str] = attrs.Factory(dict)  # recipient of each accepted request id


class RoomMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.config = CONFIG
        self.state = RoomState("room", self.config)
        self.now = 1_000_000.0
        self.store: dict[str, bytes] = {}
        self.clients = [Client() for _ in range(3)]
        self.streams: dict[str, Stream] = {}  # the runtime's open streams, by session
        self.live: dict[str, Model] = {}  # join order
        self.dead: dict[str, str] = {}  # ended sessions and their tokens
        self.all_sids: list[str] = []
        self.received: dict[str, list[int]] = {}
        self.on_wire: dict[str, set[int]] = {}
        self.id_seen: dict[str, int] = {}
        self.counter = 0

    # -- the fake runtime and clients ------------------------------------------------------
    def _with_stream(self) -> list[Client]:
        return [c for c in self.clients if c.stream is not None]

    def _with_session(self) -> list[Client]:
        return [c for c in self.clients if c.sid is not None]

    def _pick(self, clients: list[Client], pick: int) -> Client:
        return clients[pick % len(clients)]

    def _fresh(self) -> FreshSession:
        self.counter += 1
        return FreshSession(f"sid-{self.counter}", f"tok-{self.counter}", 7 * self.counter)

    def _tick(self, dt: float) -> bool:
        """Advance time; the model ends sessions whose grace is over. Roster changed?"""
        self.now += dt
        due = [
            s for s, m in self.live.items() if m.expires_at is not None and m.expires_at <= self.now
        ]
        for sid in due:
            self._end(sid)
        return bool(due)

    def _end(self, sid: str) -> None:
        self.dead[sid] = self.live.pop(sid).token

    def _commit(self) -> None:
        puts, deletes = self.state.take_writes()
        assert not set(puts) & deletes
        for key in deletes:
            self.store.pop(key, None)
        for key, value in puts.items():
            raw = value if isinstance(value, bytes) else dumps(value)
            json.loads(raw)  # plain JSON
            self.store[key] = raw

    def _send(
        self, stream: Stream, event: str, raw: dict[str, Any] | bytes, entry: Any = None
    ) -> None:
        data = loads(raw) if isinstance(raw, bytes) else raw
        stream.last_id += 1
        stream.pending.append((stream.last_id, event, data))
        if event == "roster":
            stream.last_roster = list(data["peers"])
        if event == "signal":
            self.on_wire.setdefault(stream.sid, set()).add(data["signal"]["n"])
        if entry is not None and entry.record:
            self.state.delivered(stream.sid, stream.last_id, entry)

    def _receive(self, client: Client, count: int) -> None:
        stream = client.stream
        assert stream is not None
        got, stream.pending = stream.pending[:count], stream.pending[count:]
        sid = stream.sid
        for event_id, event, data in got:
            assert event_id > self.id_seen.get(sid, -1), "event ids must grow per session"
            self.id_seen[sid] = client.last_seen = event_id
            if event == "signal":
                n = data["signal"]["n"]
                seen = self.received.setdefault(sid, [])
                expected = self.live[sid].expected
                assert n not in seen, f"signal {n} delivered twice"
                assert not seen or expected.index(n) > expected.index(seen[-1]), "order"
                seen.append(n)

    def _perform(self, effects: list[Effect], changed: bool, exclude: str | None) -> int:
        """Check roster broadcasts, then carry effects out; the last id of ended streams."""
        rosters = [e for e in effects if isinstance(e, Emit) and e.event == "roster"]
        wanted = [s for s, m in self.live.items() if m.connected and s != exclude]
        assert [e.session_id for e in rosters] == (wanted if changed else [])
        assert all(e.data == {"peers": list(self.live)} for e in rosters)
        ended = 0
        for effect in effects:
            if isinstance(effect, EndStream):
                stream = self.streams.pop(effect.session_id)
                self._send(stream, "bye", {"reason": effect.reason})
                stream.owner.stream = None  # its client stops reading the old stream
                ended = max(ended, stream.last_id)
            else:
                self._send(self.streams[effect.session_id], effect.event, effect.data, effect)
        return ended

    def _excuse_unread(self, sid: str) -> None:
        """Signals sent but never read can be lost for good (no Last-Event-ID, a crash)."""
        model = self.live[sid]
        model.excused |= self.on_wire.get(sid, set()) - set(self.received.get(sid, []))

    def _drop(self, stream: Stream) -> None:
        """The runtime reports a stream that ended without the actor closing it."""
        del self.streams[stream.sid]
        stream.owner.stream = None
        model = self.live[stream.sid]
        model.connected, model.expires_at = False, self.now + self.config.grace
        effects = self.state.disconnected(self.now, stream.sid, stream.last_id)
        self._perform(effects, False, None)

    # -- rules -----------------------------------------------------------------------------
    @initialize(cap=st.sampled_from([2, 3]))
    def room_size(self, cap: int) -> None:
        self.config = attrs.evolve(CONFIG, max_peers=cap)
        self.state = RoomState("room", self.config)

    @rule(c=PICK, mode=MODES, dt=DT, refuse=st.sampled_from([False, False, False, True]))
    def open_stream(self, c: int, mode: str, dt: float, refuse: bool) -> None:
        client = self._pick(self.clients, c)
        if client.sid is None:
            mode = "new"
        elif mode == "last_id_only" and client.last_seen is None:
            mode = "no_last_id"
        changed = self._tick(dt)
        fresh = self._fresh()
        sid, token = client.sid, client.token
        table: dict[str, dict[str, Any]] = {
            "new": {"session_id": None, "token": None, "last_event_id": None},
            "token": {"session_id": sid, "token": token, "last_event_id": client.last_seen},
            "no_last_id": {"session_id": sid, "token": token, "last_event_id": None},
            "last_id_only": {"session_id": None, "token": None, "last_event_id": client.last_seen},
            "wrong_token": {"session_id": sid, "token": f"{token}!", "last_event_id": None},
        }
        args = table[mode]
        refuse_new = REFUSED if refuse else None
        result = self.state.connect(self.now, fresh=fresh, refuse_new=refuse_new, **args)
        live = sid in self.live
        if mode == "wrong_token" and live:
            assert isinstance(result, Rejected) and result.status == 403
            self._perform(result.effects, changed, None)
            self._commit()
            return
        if not (mode != "new" and live) and (refuse or len(self.live) >= self.config.max_peers):
            # A new session is refused: the caller's refusal first, else the room is full.
            assert isinstance(result, Rejected)
            expected = REFUSED if refuse else Rejected(ROOM_FULL, result.reason)
            assert (result.status, result.reason) == (expected.status, expected.reason)
            note_event(f"connect refused: {result.status}")
            self._perform(result.effects, changed, None)
            self._commit()
            return
        assert isinstance(result, Connected)
        assert result.resumed == (mode != "new" and live)
        replays = sum(o.event == "signal" for o in result.stream_events)
        note_event(
            f"connect {mode}: {'resumed' if result.resumed else 'new'}, replays={min(replays, 2)}"
        )
        if result.resumed:
            assert result.session_id == sid and result.token == token
            model = self.live[result.session_id]
            replaced = model.connected
            if args["last_event_id"] is None:
                self._excuse_unread(result.session_id)
        else:
            assert (result.session_id, result.token) == (fresh.session_id, fresh.token)
            assert client.stream is None
            replaced = False
            model = self.live[fresh.session_id] = Model(fresh.token, fresh.key)
            self.all_sids.append(fresh.session_id)
            client.last_seen = None
            changed = True
        assert result.key == model.key and result.id_floor >= model.key * ID_SPAN
        if replaced:  # the old stream is closed before anything else happens
            assert result.effects[0] == EndStream(result.session_id, "replaced")
        assert [e for e in result.effects if isinstance(e, EndStream)] == (
            [EndStream(result.session_id, "replaced")] if replaced else []
        )
        outs = result.stream_events
        assert [o.event for o in outs[:2]] == ["session", "roster"]
        assert outs[0].data == {
            "session_id": result.session_id,
            "token": model.token,
            "room": "room",
            "resumed": result.resumed,
        }
        assert outs[1].data == {"peers": list(self.live)}
        assert all(o.event == "signal" and o.record for o in outs[2:])
        assert all(isinstance(o.data, bytes) for o in outs[2:])
        signals = [loads(o.data)["signal"]["n"] for o in outs[2:]]
        assert signals[len(signals) - len(model.queue) :] == model.queue
        model.connected, model.expires_at, model.queue = True, None, []
        ended = self._perform(result.effects, changed, result.session_id)
        stream = Stream(result.session_id, max(result.id_floor, ended), client)
        self.streams[result.session_id] = client.stream = stream
        client.sid, client.token = result.session_id, result.token
        for out in outs:
            self._send(stream, out.event, out.data, out)
        self._commit()

    @precondition(lambda self: any(c.stream and c.stream.pending for c in self.clients))
    @rule(c=PICK, count=st.integers(1, 6))
    def read(self, c: int, count: int) -> None:
        readers = [cl for cl in self._with_stream() if cl.stream and cl.stream.pending]
        self._receive(self._pick(readers, c), count)

    @precondition(lambda self: self._with_stream())
    @rule(c=PICK, keep=st.integers(0, 4), dt=DT)
    def drop_stream(self, c: int, keep: int, dt: float) -> None:
        client = self._pick(self._with_stream(), c)
        changed = self._tick(dt)
        if changed:  # the roster event reaches open streams first
            self._perform(self.state.expire(self.now), True, None)
        self._receive(client, keep)
        assert client.stream is not None
        self._drop(client.stream)
        self._commit()

    @precondition(lambda self: self._with_session())
    @rule(c=PICK, to=PICK, rid=st.sampled_from([None, None, "a", "b"]), n=st.integers(1, 3), dt=DT)
    def signal_to_peer(self, c: int, to: int, rid: str | None, n: int, dt: float) -> None:
        """One to three signals from a session to a live one (which may be reconnecting)."""
        peers = list(self.live) or ["sid-nobody"]
        sender, peer = self._pick(self._with_session(), c), peers[to % len(peers)]
        for i in range(n):
            self._signal(sender, peer, rid if i == 0 else None, False, dt if i == 0 else 0.0)

    @precondition(lambda self: self._with_session())
    @rule(
        c=PICK,
        to=PICK,
        rid=st.sampled_from([None, None, "a", "b"]),
        forge=st.booleans(),
        dt=DT,
    )
    def signal_anyone(self, c: int, to: int, rid: str | None, forge: bool, dt: float) -> None:
        anyone = [*self.all_sids, "sid-nobody"]
        self._signal(self._pick(self._with_session(), c), anyone[to % len(anyone)], rid, forge, dt)

    def _signal(self, client: Client, to: str, rid: str | None, forge: bool, dt: float) -> None:
        assert client.sid is not None and client.token is not None
        sender = client.sid
        changed = self._tick(dt)
        self.counter += 1
        n = self.counter
        result = self.state.signal(
            self.now,
            sender=sender,
            token=client.token + ("!" if forge else ""),
            to=to,
            payload=dumps({"n": n}),
            request_id=rid,
        )
        source = self.live.get(sender)
        recipient = self.live.get(to)
        if source is None or forge:
            status = 403
        elif rid is not None and rid in source.rids:
            status = 0  # a duplicate: accepted, nothing delivered
        elif recipient is None:
            status = 404
        elif not recipient.connected and len(recipient.queue) >= self.config.queue_limit:
            status = 503
        else:
            status = 200
        signals = [e for e in result.effects if isinstance(e, Emit) and e.event == "signal"]
        note_event(f"signal status {status}")
        if status in (0, 200):
            assert isinstance(result, Accepted)
        else:
            assert isinstance(result, Rejected) and result.status == status
            assert result.retry_after == (1 if status == 503 else None)
        if status == 200:
            assert source is not None and recipient is not None
            recipient.expected.append(n)
            if recipient.connected:
                data = dumps({"from": sender, "signal": {"n": n}})
                tag = None if rid is None else storage.tag(sender, rid)
                assert signals == [Emit(to, "signal", data, True, tag)]
            else:
                assert signals == []
                recipient.queue.append(n)
            if rid is not None:
                source.rids.add(rid)
                source.rid_to[rid] = to
        else:
            assert signals == []
        self._perform(result.effects, changed, None)
        self._commit()

    @precondition(lambda self: self._with_session())
    @rule(c=PICK, how=st.sampled_from(["leave", "forged_leave", "abandon"]), dt=DT)
    def go_away(self, c: int, how: str, dt: float) -> None:
        client = self._pick(self._with_session(), c)
        if how == "abandon":
            self._abandon(client, dt)
        else:
            self._leave(client, how == "forged_leave", dt)

    def _leave(self, client: Client, forge: bool, dt: float) -> None:
        assert client.sid is not None and client.token is not None
        changed = self._tick(dt)
        sid = client.sid
        token = client.token + ("!" if forge else "")
        result = self.state.leave(self.now, sender=sid, token=token)
        model = self.live.get(sid)
        if model is None or forge:
            assert isinstance(result, Rejected) and result.status == 403
            self._perform(result.effects, changed, None)
        else:
            assert isinstance(result, Accepted)
            ends = [e for e in result.effects if isinstance(e, EndStream)]
            assert ends == ([EndStream(sid, "left")] if model.connected else [])
            assert not ends or result.effects[0] == ends[0]
            self._end(sid)
            self._perform(result.effects, True, None)
            assert client.stream is None
        self._commit()

    def _abandon(self, client: Client, dt: float) -> None:
        """The tab forgets its session without leaving: it lingers until its grace ends."""
        changed = self._tick(dt)
        if changed:
            self._perform(self.state.expire(self.now), True, None)
        if client.stream is not None:
            self._drop(client.stream)
        client.sid = client.token = client.last_seen = None
        self._commit()

    @rule(dt=DT)
    def alarm(self, dt: float) -> None:
        changed = self._tick(dt)
        self._perform(self.state.expire(self.now), changed, None)
        self._commit()

    @precondition(lambda self: self.dead)
    @rule(c=PICK, token=st.sampled_from(["own", "none", "other"]))
    def dead_session_stays_dead(self, c: int, token: str) -> None:
        """A left or expired session's id and token never work again."""
        sid, real = sorted(self.dead.items())[c % len(self.dead)]
        other = next(iter(self.live.values())).token if self.live else "x"
        given = {"own": real, "none": None, "other": other}[token]
        for rejected in (
            self.state.signal(
                self.now, sender=sid, token=real, to=sid, payload={}, request_id=None
            ),
            self.state.leave(self.now, sender=sid, token=real),
        ):
            assert isinstance(rejected, Rejected) and rejected.status == 403
            assert rejected.effects == []
        before = self.state.roster()
        result = self.state.connect(
            self.now, session_id=sid, token=given, last_event_id=None, fresh=self._fresh()
        )
        if len(before) >= self.config.max_peers:
            assert isinstance(result, Rejected) and result.status == ROOM_FULL
            assert result.effects == [] and self.state.roster() == before
            return
        assert isinstance(result, Connected) and not result.resumed and result.session_id != sid
        # Undo that new session so the model stays as it was.
        undo = self.state.leave(self.now, sender=result.session_id, token=result.token)
        assert isinstance(undo, Accepted)
        assert self.state.roster() == before
        self._commit()

    @rule(how=st.sampled_from(["hibernate", "crash"]), dt=st.sampled_from([1.0, 5.0, 20.0]))
    def restart(self, how: str, dt: float) -> None:
        if how == "hibernate":
            self._hibernate()
        else:
            self._crash(dt)

    def _hibernate(self) -> None:
        """The actor is dropped from memory and rebuilt; the runtime keeps its streams."""
        writes = self.state.volatile_writes().items()
        self.store.update({k: v if isinstance(v, bytes) else dumps(v) for k, v in writes})
        for model in self.live.values():
            model.saved_rids = set(model.rids)
        before = [self.state.session_info(sid) for sid in self.state.roster()]
        self.state = RoomState.restore("room", self.config, self.store)
        assert [self.state.session_info(sid) for sid in self.state.roster()] == before
        self._commit()

    def _crash(self, dt: float) -> None:
        """The process dies (memory lost, only committed writes left) and restarts; the
        runtime then reports every stream it had as lost. Every accepted signal is back
        (in its recipient's queue or replay history, committed with its answer), so a
        client resuming with its Last-Event-ID misses nothing; request ids are back for
        every signal whose recipient lives (stored with the signal), and as of the last
        hibernation for the others."""
        self.state = RoomState.restore("room", self.config, self.store)
        for model in self.live.values():
            kept = {rid for rid, to in model.rid_to.items() if to in self.live}
            model.rids = set(model.saved_rids) | kept
        lost = list(self.streams.values())
        changed = self._tick(dt)
        if changed:
            effects = self.state.expire(self.now)
            assert {e.session_id for e in effects} <= set(self.streams)
            assert all(isinstance(e, Emit) and e.event == "roster" for e in effects)
        for stream in lost:
            stream.pending.clear()
            del self.streams[stream.sid]
            stream.owner.stream = None
        for stream in lost:
            model = self.live[stream.sid]
            model.connected, model.expires_at = False, self.now + self.config.grace
            effects = self.state.disconnected(self.now, stream.sid, stream.last_id)
            assert all(isinstance(e, Emit) and e.event == "roster" for e in effects)
        self._commit()

    @rule()
    def settle(self) -> None:
        """Every client reconnects with what it saw and reads everything: each signal
        accepted for its live session has arrived exactly once."""
        for client in self.clients:
            if client.sid in self.live and client.stream is None:
                result = self.state.connect(
                    self.now,
                    session_id=client.sid,
                    token=client.token,
                    last_event_id=client.last_seen,
                    fresh=self._fresh(),
                )
                assert isinstance(result, Connected) and result.resumed
                if client.last_seen is None:
                    self._excuse_unread(result.session_id)
                model = self.live[result.session_id]
                model.connected, model.expires_at, model.queue = True, None, []
                self._perform(result.effects, False, result.session_id)
                stream = Stream(result.session_id, result.id_floor, client)
                self.streams[result.session_id] = client.stream = stream
                for out in result.stream_events:
                    self._send(stream, out.event, out.data, out)
        for client in self.clients:
            if client.stream is not None:
                self._receive(client, len(client.stream.pending))
        self.caught_up_clients_have_everything()
        self._commit()

    # -- invariants ------------------------------------------------------------------------
    @invariant()
    def roster_is_live_sessions_in_join_order(self) -> None:
        assert self.state.roster() == list(self.live)

    @invariant()
    def connected_sessions_are_those_with_streams(self) -> None:
        connected = [s for s, m in self.live.items() if m.connected]
        assert self.state.sessions_connected() == connected
        assert sorted(self.streams) == sorted(connected)

    @invariant()
    def every_stream_has_the_current_roster(self) -> None:
        for stream in self.streams.values():
            assert stream.last_roster == list(self.live)

    @invariant()
    def alarm_and_queues_match(self) -> None:
        deadlines = [m.expires_at for m in self.live.values() if m.expires_at is not None]
        assert self.state.next_alarm() == (min(deadlines) if deadlines else None)
        for sid, model in self.live.items():
            info = self.state.session_info(sid)
            assert info is not None
            assert (info.connected, info.expires_at, info.queued) == (
                model.connected,
                model.expires_at,
                len(model.queue),
            )

    @invariant()
    def caught_up_clients_have_everything(self) -> None:
        for client in self.clients:
            stream = client.stream
            if stream is not None and not stream.pending:
                model = self.live[stream.sid]
                missing = (
                    set(model.expected) - model.excused - set(self.received.get(stream.sid, []))
                )
                assert not missing, f"{stream.sid} never got signals {sorted(missing)}"

    @invariant()
    def held_bytes_are_the_stored_signals(self) -> None:
        """What the room counts as held is what its history and queue keys store."""
        stored = sum(len(v) for k, v in self.store.items() if k.startswith(("h/", "q/")))
        assert self.state.held == stored

    @invariant()
    def storage_restores_the_same_room(self) -> None:
        again = RoomState.restore("room", self.config, self.store)
        assert again.roster() == self.state.roster()
        for sid in again.roster():
            mine, theirs = again.session_info(sid), self.state.session_info(sid)
            assert mine is not None and theirs is not None
            assert (mine.connected, mine.expires_at, mine.queued, mine.join_seq) == (
                theirs.connected,
                theirs.expires_at,
                theirs.queued,
                theirs.join_seq,
            )


RoomMachine.TestCase.settings = settings(
    max_examples=500,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRoomMachine = RoomMachine.TestCase
