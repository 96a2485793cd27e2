"""The rules of one signaling room as a pure, deterministic state machine (sans-io).

``RoomState`` knows sessions, the roster, tokens, queues, replay history, rate limits
and expiry. It does no I/O and reads no clock: every input carries ``now`` (epoch
seconds) and any random values, and every output is data. The actor owns the streams
and storage; it feeds events in and performs what comes out:

- results (``Connected``, ``Accepted``, ``Rejected``) carry ``effects`` to perform in
  order, on success and failure alike (a call may first expire sessions whose grace
  ended, and the remaining streams must get the new roster);
- ``take_writes`` after each call gives the storage puts and deletes to commit
  (layout in ``storage``; a signal's entry is a ``bytes`` value, its data as sent);
  ``volatile_writes`` before hibernation and at shutdown;
- ``delivered`` reports the event id each recorded signal got on the wire (its replay
  history entry is then one of the writes);
- ``held`` is the bytes of signal data the room keeps (history and queues), within
  ``RoomConfig.session_bytes`` per session and ``room_bytes`` for the room.

A signal's payload comes in as the JSON text it will be sent as, and stays bytes: the
rules never look inside it.
- ``next_alarm`` is when ``expire`` should be called next.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from roomkeeper.jsonutil import dumps

from . import storage
from .records import (
    ID_SPAN,
    QUEUE_FULL,
    ROOM_FULL,
    Accepted,
    Connected,
    Effect,
    Emit,
    EndStream,
    FreshSession,
    Outgoing,
    Rejected,
    RoomConfig,
    SessionInfo,
)
from .session import Session, size

__all__ = [
    "ID_SPAN",
    "ROOM_FULL",
    "Accepted",
    "Connected",
    "Effect",
    "Emit",
    "EndStream",
    "FreshSession",
    "Outgoing",
    "Rejected",
    "RoomConfig",
    "RoomState",
    "SessionInfo",
]


def _token_ok(given: str | None, expected: str) -> bool:
    """Constant-time token check (bytes, so any string compares without error)."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class RoomState:
    """Sessions of one room, in join order, and the rules that govern them."""

    def __init__(self, room: str, config: RoomConfig | None = None) -> None:
        self.room = room
        self.config = config if config is not None else RoomConfig()
        self._sessions: dict[str, Session] = {}  # insertion order is join order
        self._by_key: dict[int, str] = {}
        self._expiry: dict[str, float] = {}  # disconnected sessions only
        self._earliest: float | None = None
        self._next_seq = 0
        self._puts: dict[str, Any] = {}
        self._deletes: set[str] = set()

    @classmethod
    def restore(
        cls, room: str, config: RoomConfig | None, records: Mapping[str, bytes]
    ) -> RoomState:
        """Rebuild from the key/value pairs written through ``take_writes`` and
        ``volatile_writes``. Sessions stored without ``expires_at`` count as connected;
        the caller should then report streams lost meanwhile and call ``expire``."""
        state = cls(room, config)
        sessions, orphans, upgrade = storage.load(records, state.config)
        for session in sessions:
            state._add(session)
        for session in sessions:  # within this config's limits (they may have shrunk)
            while len(session.history) > state.config.replay_limit:
                state._drop_oldest(session)
            state._fit(session, 0)
        for key in orphans:
            state._delete(key)
        for key, raw in upgrade.items():
            state._put(key, raw)
        return state

    # -- inputs ------------------------------------------------------------------------
    def connect(
        self,
        now: float,
        *,
        session_id: str | None,
        token: str | None,
        last_event_id: int | None,
        fresh: FreshSession,
        refuse_new: Rejected | None = None,
    ) -> Connected | Rejected:
        """A client opens a stream: resume its session or make a new one.

        A new session is refused with ``refuse_new`` if the caller gives one (its policy:
        a missing admission ticket, a spent per-address budget), else with ``ROOM_FULL``
        (409) if the room holds ``max_peers`` sessions already. Resuming is never refused
        for either reason."""
        changed = self._expire_due(now)
        session: Session | None = None
        if session_id is not None:
            session = self._sessions.get(session_id)
            if session is not None and not _token_ok(token, session.token):
                return Rejected(403, "wrong or missing token", effects=self._roster(changed))
        # An unknown session_id counts as none given, so a browser whose URL still names an
        # expired session gets back the session its Last-Event-ID belongs to.
        if session is None and last_event_id is not None:
            found = self._by_key.get(last_event_id // ID_SPAN)
            session = None if found is None else self._sessions[found]
        effects: list[Effect] = []
        resumed = session is not None
        if session is None:
            if refuse_new is not None:
                return attrs.evolve(refuse_new, effects=self._roster(changed))
            if len(self._sessions) >= self.config.max_peers:
                reason = f"room is full ({self.config.max_peers} sessions)"
                return Rejected(ROOM_FULL, reason, effects=self._roster(changed))
            session = self._create(fresh)
            changed = True
        elif session.connected:
            effects.append(EndStream(session.session_id, "replaced"))
        sid = session.session_id
        effects += self._roster(changed, exclude=sid)

        replay: list[Outgoing] = []
        if last_event_id is not None and session.owns(last_event_id):
            session.hwm = max(session.hwm, last_event_id)
            for eid, out in session.take_history_after(last_event_id):
                self._unstore(session, eid, out)
                replay.append(out)
        for qseq, out in session.take_queue():
            self._delete(storage.queue_key(sid, qseq, out))
            replay.append(out)
        session.connected = True
        self._set_expiry(session, None)
        self._put(storage.session_key(sid), storage.session_record(session))
        hello = {"session_id": sid, "token": session.token, "room": self.room, "resumed": resumed}
        return Connected(
            session_id=sid,
            token=session.token,
            key=session.key,
            resumed=resumed,
            id_floor=session.hwm,
            stream_events=[
                Outgoing("session", hello),
                Outgoing("roster", {"peers": self.roster()}),
                *replay,
            ],
            effects=effects,
        )

    def disconnected(self, now: float, session_id: str, last_event_id: int) -> list[Effect]:
        """A session's stream ended (dropped, overflowed, lost in a restart): its grace
        period starts. A session already disconnected keeps its deadline."""
        effects = self._roster(self._expire_due(now))
        session = self._sessions.get(session_id)
        if session is None:
            return effects
        before = (session.connected, session.hwm)
        session.hwm = max(session.hwm, last_event_id)
        if session.connected:
            session.connected = False
            self._set_expiry(session, now + self.config.grace)
        if (session.connected, session.hwm) != before:
            self._put(storage.session_key(session_id), storage.session_record(session))
        return effects

    def undelivered(self, now: float, session_id: str, entry: Outgoing | Emit) -> list[Effect]:
        """A recorded signal could not be written: the session's stream had just ended
        (its consumer fell behind). The session is disconnected from now on and the
        signal waits in its queue, so nothing accepted is lost."""
        effects = self.disconnected(now, session_id, 0)
        session = self._sessions.get(session_id)
        if session is not None and entry.record:
            self._fit(session, size(_kept(entry)))  # room made if it can be; never refused
            self._queue(session, _kept(entry))
        return effects

    def signal(
        self,
        now: float,
        *,
        sender: str,
        token: str,
        to: str,
        payload: bytes,
        request_id: str | None,
    ) -> Accepted | Rejected:
        """A session posts a signal to a peer (checks: 403, 429, duplicate, 404, 503).

        ``payload`` is the signal's JSON text. To a peer without a stream, the signal is
        queued if it fits the queue's count and the byte budgets, the oldest replay
        history (of the peer, then of the room) dropped to make room first; else 503."""
        config = self.config
        effects = self._roster(self._expire_due(now))
        source = self._sessions.get(sender)
        if source is None or not _token_ok(token, source.token):
            return Rejected(403, "unknown sender or wrong token", effects=effects)
        wait = source.bucket.spend(now, config.rate_burst, config.rate_refill)
        if wait is not None:
            return Rejected(429, "rate limit exceeded", retry_after=wait, effects=effects)
        if request_id is not None and request_id in source.requests:
            return Accepted(effects)
        target = self._sessions.get(to)
        if target is None:
            return Rejected(404, "no such peer in this room", effects=effects)
        data = b'{"from":' + dumps(sender) + b',"signal":' + payload + b"}"
        tag = None if request_id is None else storage.tag(sender, request_id)
        if target.connected:
            effects.append(Emit(to, "signal", data, record=True, tag=tag))
        elif len(target.queue) >= config.queue_limit or not self._fit(target, len(data)):
            return Rejected(QUEUE_FULL, "peer's queue is full", retry_after=1, effects=effects)
        else:
            self._queue(target, Outgoing("signal", data, record=True, tag=tag))
        if request_id is not None:
            source.remember(request_id, config.idempotency_window)
        return Accepted(effects)

    def signal_batch(
        self,
        now: float,
        *,
        sender: str,
        token: str,
        signals: Sequence[tuple[str, bytes, str | None]],
    ) -> tuple[int, Accepted | Rejected]:
        """Several signals of one sender, each ``(to, payload, request_id)``, taken in
        order as `signal` takes them, up to the first refused: how many were taken, and
        `Accepted` (all were) or that first `Rejected`, with the effects of all taken."""
        effects: list[Effect] = []
        for taken, (to, payload, request_id) in enumerate(signals):
            result = self.signal(
                now, sender=sender, token=token, to=to, payload=payload, request_id=request_id
            )
            effects += result.effects
            if isinstance(result, Rejected):
                return taken, attrs.evolve(result, effects=effects)
        return len(signals), Accepted(effects)

    def leave(self, now: float, *, sender: str, token: str) -> Accepted | Rejected:
        """A session ends itself at once."""
        changed = self._expire_due(now)
        session = self._sessions.get(sender)
        if session is None or not _token_ok(token, session.token):
            return Rejected(403, "unknown sender or wrong token", effects=self._roster(changed))
        effects: list[Effect] = [EndStream(sender, "left")] if session.connected else []
        self._remove(session)
        return Accepted(effects + self._roster(True))

    def expire(self, now: float) -> list[Effect]:
        """End every session whose grace period is over (the alarm fired)."""
        return self._roster(self._expire_due(now))

    def delivered(self, session_id: str, event_id: int, entry: Outgoing | Emit) -> None:
        """The runtime gave ``entry`` (from ``stream_events`` or an ``Emit``) this id."""
        session = self._sessions.get(session_id)
        if session is None:
            return
        session.hwm = max(session.hwm, event_id)
        if not entry.record:
            return
        out = _kept(entry)
        while len(session.history) >= self.config.replay_limit and session.history:
            self._drop_oldest(session)
        if self.config.replay_limit > 0 and self._fit(session, size(out)):
            session.keep(event_id, out)
            if self.config.durable_history:
                session.stored.add(event_id)
                self._put(storage.history_key(session_id, event_id, out), out.data)

    # -- outputs -------------------------------------------------------------------------
    def take_writes(self) -> tuple[dict[str, Any], set[str]]:
        """Storage puts and deletes since the last call (disjoint key sets)."""
        puts, deletes = self._puts, self._deletes
        self._puts, self._deletes = {}, set()
        return puts, deletes

    def volatile_writes(self) -> dict[str, Any]:
        """Puts that save what lives only in memory (request ids, id high-water marks,
        rate buckets, and without ``durable_history`` the replay history not yet
        stored, which counts as stored from now on), for hibernation and shutdown."""
        puts: dict[str, Any] = {}
        for sid, session in self._sessions.items():
            puts[storage.volatile_key(sid)] = storage.volatile_record(session)
            for eid, out in session.history:
                if eid not in session.stored:
                    session.stored.add(eid)
                    puts[storage.history_key(sid, eid, out)] = out.data
        return puts

    @property
    def held(self) -> int:
        """Bytes of signal data kept in replay histories and queues."""
        return sum(s.held for s in self._sessions.values())

    def next_alarm(self) -> float | None:
        """When the next session expires, if any is disconnected."""
        return self._earliest

    # -- views ---------------------------------------------------------------------------
    def roster(self) -> list[str]:
        """Every live session, in join order."""
        return list(self._sessions)

    def sessions_connected(self) -> list[str]:
        return [sid for sid, s in self._sessions.items() if s.connected]

    def authenticated(self, now: float, session_id: str, token: str) -> bool:
        """Whether ``session_id`` is live at ``now`` and ``token`` is its token. Read-only:
        a session whose grace ended by ``now`` counts as gone, as ``leave`` would find."""
        session = self._sessions.get(session_id)
        if session is None or not _token_ok(token, session.token):
            return False
        return session.expires_at is None or session.expires_at > now

    def session_info(self, session_id: str) -> SessionInfo | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        return SessionInfo(
            session_id=session_id,
            connected=session.connected,
            expires_at=session.expires_at,
            queued=len(session.queue),
            join_seq=session.seq,
            id_hwm=session.hwm,
            replayable=len(session.history),
            held=session.held,
        )

    # -- internals -----------------------------------------------------------------------
    def _create(self, fresh: FreshSession) -> Session:
        if fresh.session_id in self._sessions or fresh.key in self._by_key:
            raise ValueError("fresh session id or key already in use")
        session = Session.new(fresh.session_id, fresh.token, fresh.key, self._next_seq, self.config)
        self._add(session)
        return session

    def _add(self, session: Session) -> None:
        self._sessions[session.session_id] = session
        self._by_key[session.key] = session.session_id
        self._next_seq = max(self._next_seq, session.seq + 1)
        self._set_expiry(session, session.expires_at)

    def _remove(self, session: Session) -> None:
        for key in storage.session_keys(session):
            self._delete(key)
        del self._sessions[session.session_id]
        del self._by_key[session.key]
        self._set_expiry(session, None)

    def _queue(self, session: Session, out: Outgoing) -> None:
        qseq = session.enqueue(out)
        self._put(storage.queue_key(session.session_id, qseq, out), out.data)

    def _drop_oldest(self, session: Session) -> None:
        eid, out = session.drop_oldest()
        self._unstore(session, eid, out)

    def _unstore(self, session: Session, eid: int, out: Outgoing) -> None:
        """A history entry left the history: delete its key, if it has one."""
        if eid in session.stored:
            session.stored.discard(eid)
            self._delete(storage.history_key(session.session_id, eid, out))

    def _fit(self, session: Session, more: int) -> bool:
        """Drop the oldest replay history, the session's then the room's, until ``more``
        bytes fit the session's and the room's budgets; whether they do."""
        config = self.config
        while session.held + more > config.session_bytes and session.history:
            self._drop_oldest(session)
        held = self.held
        while held + more > config.room_bytes:
            kept = [s for s in self._sessions.values() if s.history]
            if not kept:
                break
            # An event id's low digits are its send time (µs): comparable across sessions.
            oldest = min(kept, key=lambda s: s.history[0][0] % ID_SPAN)
            before = oldest.held
            self._drop_oldest(oldest)
            held -= before - oldest.held
        return session.held + more <= config.session_bytes and held + more <= config.room_bytes

    def _set_expiry(self, session: Session, when: float | None) -> None:
        session.expires_at = when
        sid = session.session_id
        if when is not None:
            self._expiry[sid] = when
            if self._earliest is None or when < self._earliest:
                self._earliest = when
        elif self._expiry.pop(sid, None) is not None:
            self._earliest = min(self._expiry.values(), default=None)

    def _expire_due(self, now: float) -> bool:
        """Remove sessions whose grace ended by ``now``; whether any was removed."""
        if self._earliest is None or self._earliest > now:
            return False
        for sid in [sid for sid, when in self._expiry.items() if when <= now]:
            self._remove(self._sessions[sid])
        return True

    def _roster(self, changed: bool, exclude: str | None = None) -> list[Effect]:
        """The roster event for every other connected session, if the roster changed."""
        if not changed:
            return []
        data = {"peers": self.roster()}
        return [
            Emit(sid, "roster", data)
            for sid, s in self._sessions.items()
            if s.connected and sid != exclude
        ]

    def _put(self, key: str, value: Any) -> None:
        self._deletes.discard(key)
        self._puts[key] = value

    def _delete(self, key: str) -> None:
        self._puts.pop(key, None)
        self._deletes.add(key)


def _kept(entry: Outgoing | Emit) -> Outgoing:
    """The signal of an ``Emit`` or ``Outgoing`` as history and queues keep it."""
    if isinstance(entry, Outgoing):
        return entry
    return Outgoing(entry.event, entry.data, record=True, tag=entry.tag)
