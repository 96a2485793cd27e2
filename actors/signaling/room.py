"""The signaling room: a thin actor that feeds ``RoomState`` and performs its effects.

The rules live in ``state.py`` (pure, deterministic); this module owns what the rules
cannot: the runtime's streams, storage, the alarm, the clock and randomness.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from roomkeeper.ice import IceServers
from roomkeeper.jsonutil import dumps
from roomkeeper.runtime import Actor, ActorContext, StreamInfo
from roomkeeper.signaling import MAX_BATCH, SessionView

from .budget import MemoryAccount
from .messages import (
    Connect,
    Done,
    GetIceServers,
    IceConfig,
    Inspect,
    Joined,
    Leave,
    PartlyRefused,
    Refused,
    Signal,
    SignalBatch,
)
from .records import (
    ID_SPAN,
    Connected,
    Effect,
    Emit,
    EndStream,
    FreshSession,
    Outgoing,
    Rejected,
    RoomConfig,
)
from .state import RoomState


def random_session() -> FreshSession:
    """Session id and token from the OS's cryptographic RNG; a 63-bit id key."""
    return FreshSession(str(uuid.uuid4()), str(uuid.uuid4()), secrets.randbits(63))


DEFAULT_BUDGET = 1 << 30
"""The process's memory budget when none is given (a server's default derives it from the
machine, ``Config.memory_budget``)."""

MEMORY_RETRY_AFTER = 5
"""Seconds a client refused for memory is told to wait."""


@attrs.frozen
class RoomEnv:
    """What every room of a server shares: its limits, where fresh sessions come from,
    the account of bytes held against the process's memory budget, and the ICE servers
    its sessions get (in their ``session`` event, and on request)."""

    config: RoomConfig = attrs.Factory(RoomConfig)
    fresh: Callable[[], FreshSession] = random_session
    account: MemoryAccount = attrs.Factory(lambda: MemoryAccount(DEFAULT_BUDGET))
    ice: IceServers = attrs.Factory(IceServers)

    @classmethod
    def from_config(cls, config: Any) -> RoomEnv:
        return cls(
            RoomConfig(
                grace=config.grace,
                queue_limit=config.queue_limit,
                rate_burst=config.rate_burst,
                rate_refill=config.rate_refill,
                max_peers=config.max_peers,
                session_bytes=config.session_bytes,
                room_bytes=config.room_bytes,
                durable_history=config.durable_signals == "on",
            ),
            account=MemoryAccount(config.memory_budget),
            ice=config.ice_servers,
        )


class Room(Actor):
    """One signaling room. Rebuilt from storage on every wake; streams survive in the
    runtime and are found again through their ``{"session_id": ...}`` attachments.

    What a handler tells other streams (roster changes, a ``bye``, signals) must not run
    ahead of its writes: if the commit fails, the request is answered 503 and nothing of
    it may have been announced (no roster with a session that was never made, no ``bye
    left`` for a session that is still there). The runtime's output gate sees to that:
    what the room sends or closes reaches clients only once the message's writes are
    durable, so the room carries its effects out at once, in the same transaction."""

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        env: RoomEnv = ctx.env if ctx.env is not None else RoomEnv()
        self.env = env
        self.state = RoomState.restore(ctx.id.name, env.config, ctx.storage.list_raw())
        self.streams: dict[str, str] = {
            info.attachment["session_id"]: info.stream_id for info in ctx.streams()
        }
        # Streams that ended while the room was not in memory (or before a restart): the
        # runtime will report them, but no signal may be routed to them meanwhile.
        now = ctx.now()
        for sid in self.state.sessions_connected():
            if sid not in self.streams:
                self.state.disconnected(now, sid, 0)
        self._account()

    def _account(self) -> None:
        """Tell the process-wide account what this room holds now."""
        self.env.account.report(self.ctx.id, self.state.held)

    def _finish(self, effects: list[Effect]) -> None:
        """Carry out the handler's effects on other streams (held by the output gate until
        the commit, see the class), then stage every write, theirs included (replay
        history entries, a signal queued because its stream had just ended)."""
        self._perform(effects)
        self._persist()

    # -- messages ----------------------------------------------------------------------
    async def on_message(self, message: Any) -> Any:
        try:
            return self._handle(self.ctx.now(), message)
        finally:
            self._account()

    def _handle(self, now: float, message: Any) -> Any:
        if isinstance(message, Signal):
            if self.env.account.full:
                return Refused(503, "server is at its memory budget", MEMORY_RETRY_AFTER)
            result = self.state.signal(
                now,
                sender=message.sender,
                token=message.token,
                to=message.to,
                payload=message.payload,
                request_id=message.request_id,
            )
        elif isinstance(message, SignalBatch):
            return self._signal_batch(now, message)
        elif isinstance(message, Connect):
            return self._connect(now, message)
        elif isinstance(message, Leave):
            result = self.state.leave(now, sender=message.sender, token=message.token)
        elif isinstance(message, Inspect):
            return [self.state.session_info(sid) for sid in self.state.roster()]
        elif isinstance(message, GetIceServers):
            return self._ice_servers(now, message)
        else:
            raise TypeError(f"a room cannot handle {type(message).__name__}")
        self._finish(result.effects)
        if isinstance(result, Rejected):
            return Refused(result.status, result.reason, result.retry_after)
        return Done()

    def _signal_batch(self, now: float, message: SignalBatch) -> Done | PartlyRefused:
        if self.env.account.full:
            no = Refused(503, "server is at its memory budget", MEMORY_RETRY_AFTER)
            return PartlyRefused(0, no)
        signals = [(s.to, s.payload, s.request_id) for s in message.signals]
        taken, result = self.state.signal_batch(
            now, sender=message.sender, token=message.token, signals=signals
        )
        self._finish(result.effects)
        if isinstance(result, Rejected):
            return PartlyRefused(taken, Refused(result.status, result.reason, result.retry_after))
        return Done()

    def _connect(self, now: float, message: Connect) -> Joined | Refused:
        no = message.refuse_new
        if no is None and self.env.account.near:
            no = Refused(503, "server is near its memory budget", MEMORY_RETRY_AFTER)
        result = self.state.connect(
            now,
            session_id=message.session_id,
            token=message.token,
            last_event_id=message.last_event_id,
            fresh=self.env.fresh(),
            refuse_new=None if no is None else Rejected(no.status, no.reason, no.retry_after),
        )
        if isinstance(result, Rejected):
            self._finish(result.effects)
            return Refused(result.status, result.reason, result.retry_after)
        assert isinstance(result, Connected)
        # A replaced stream ends first, so that the new one's ids start above its last;
        # the new stream's own events wait in it, unread until the commit has succeeded.
        replaced = [e for e in result.effects if isinstance(e, EndStream)]
        floor = max(result.id_floor, self._perform(replaced))
        sid = result.session_id
        stream_id = self.ctx.accept_stream(
            {"session_id": sid}, id_base=result.key * ID_SPAN, id_floor=floor
        )
        self.streams[sid] = stream_id
        self._send_all(
            sid, stream_id, [self._with_offers(now, out) for out in result.stream_events]
        )
        self._finish([e for e in result.effects if not isinstance(e, EndStream)])
        return Joined(stream_id, sid, result.resumed)

    def describe(self) -> dict[str, Any]:
        """What operators and tests may see of this room: its sessions in join order, each
        as a ``SessionView``, field by field (an allow-list). No token, no event id."""
        views = []
        for sid in self.state.roster():
            info = self.state.session_info(sid)
            if info is not None:
                view = SessionView(
                    session_id=info.session_id,
                    connected=info.connected,
                    expires_at=info.expires_at,
                    queued=info.queued,
                    join_seq=info.join_seq,
                    replayable=info.replayable,
                )
                views.append(view.to_json())
        return {"sessions": views}

    def _with_offers(self, now: float, out: Outgoing) -> Outgoing:
        """The ``session`` event gains what the server offers the session: its
        ``ice_servers``, and ``max_batch``, the most signals one POST may carry. Other
        events pass as they are."""
        if out.event != "session" or not isinstance(out.data, dict):
            return out
        ice = self.env.ice.for_session(out.data["session_id"], now)
        return attrs.evolve(out, data={**out.data, "ice_servers": ice, "max_batch": MAX_BATCH})

    def _ice_servers(self, now: float, message: GetIceServers) -> IceConfig | Refused:
        """Fresh ICE servers for a live session with its token; else 403, as ``leave``."""
        if not self.state.authenticated(now, message.session_id, message.token):
            return Refused(403, "unknown sender or wrong token")
        ice = self.env.ice
        return IceConfig(ice.for_session(message.session_id, now), ice.ttl)

    # -- runtime events ----------------------------------------------------------------
    async def on_stream_closed(self, stream: StreamInfo, reason: str) -> None:
        sid = stream.attachment.get("session_id")
        if sid is None or self.streams.get(sid, stream.stream_id) != stream.stream_id:
            return  # an old stream of a session that has a newer one
        self.streams.pop(sid, None)
        self._finish(self.state.disconnected(self.ctx.now(), sid, stream.last_id))
        self._account()

    async def on_alarm(self) -> None:
        self._finish(self.state.expire(self.ctx.now()))
        self._account()

    async def on_hibernate(self) -> None:
        self._persist()
        for key, value in self.state.volatile_writes().items():
            if isinstance(value, bytes):
                self.ctx.storage.put_raw(key, value)
            else:
                self.ctx.storage.put(key, value)
        self.env.account.report(self.ctx.id, 0)  # dropped from memory

    # -- effects -----------------------------------------------------------------------
    def _perform(self, effects: Iterable[Effect]) -> int:
        """Carry out effects in order; the highest last id of any stream it ended."""
        last = 0
        for effect in effects:
            stream_id = self.streams.get(effect.session_id)
            if stream_id is None:
                if isinstance(effect, Emit) and effect.record:
                    self._perform(self.state.undelivered(self.ctx.now(), effect.session_id, effect))
                continue
            if isinstance(effect, Emit):
                self._send(effect.session_id, stream_id, effect)
            elif isinstance(effect, EndStream):
                del self.streams[effect.session_id]
                final = ("bye", dumps({"reason": effect.reason}))
                last = max(last, self.ctx.close_stream(stream_id, final) or 0)
        return last

    def _send_all(self, sid: str, stream_id: str, events: Iterable[Outgoing]) -> None:
        for out in events:
            self._send(sid, stream_id, out)

    def _send(self, sid: str, stream_id: str, out: Outgoing | Emit) -> None:
        data = out.data if isinstance(out.data, bytes) else dumps(out.data)
        event_id = self.ctx.send(stream_id, out.event, data)
        if event_id is None:  # the stream just ended under us: queue, never drop
            self.streams.pop(sid, None)
            self._perform(self.state.undelivered(self.ctx.now(), sid, out))
        elif out.record:
            self.state.delivered(sid, event_id, out)

    def _persist(self) -> None:
        """Stage the state's writes and its next alarm."""
        puts, deletes = self.state.take_writes()
        storage = self.ctx.storage
        for key in deletes:
            storage.delete(key)
        for key, value in puts.items():
            if isinstance(value, bytes):
                storage.put_raw(key, value)  # a signal, kept as sent
            else:
                storage.put(key, value)
        alarm = self.state.next_alarm()
        if alarm != self.ctx.alarm:
            if alarm is None:
                self.ctx.delete_alarm()
            else:
                self.ctx.set_alarm(alarm)
