"""What an actor is and what it can do: the base class and its context."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from ..jsonutil import dumps, loads
from .ids import ActorId
from .storage import Storage
from .storage.view import encode
from .streams import Stream, StreamInfo

if TYPE_CHECKING:
    from .activation import Activation, Host


class ActorContext:
    """An actor's handle on the runtime: its id, storage, alarm, streams and clock."""

    def __init__(self, activation: Activation, storage: Storage, host: Host) -> None:
        self._activation = activation
        self._host = host
        self._streams = host.streams
        self.id: ActorId = activation.actor_id
        self.storage = storage
        self.env: Any = activation.namespace.env

    def now(self) -> float:
        """Wall-clock epoch seconds (mock time under ``MockClock``)."""
        return self._host.clock.now()

    # -- alarms ----------------------------------------------------------------------
    @property
    def alarm(self) -> float | None:
        return self.storage.alarm

    def set_alarm(self, when: float) -> None:
        """Wake this actor at ``when`` (epoch seconds), even from hibernation; replaces any
        earlier alarm. Takes effect when the current message commits."""
        self.storage.set_alarm(float(when))

    def delete_alarm(self) -> None:
        self.storage.set_alarm(None)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this message's writes are durable (at once after the
        handler if it wrote nothing); never if the handler raises or the commit fails.
        What it writes is committed right after, before the reply."""
        self._activation.after.append(callback)

    # -- streams ---------------------------------------------------------------------
    def accept_stream(self, attachment: Any, *, id_base: int = 0, id_floor: int = 0) -> str:
        """Open a runtime-held stream owned by this actor and return its id. Event ids on it
        start above ``id_floor`` and follow ``id_base + wall-clock µs``. The attachment (JSON)
        is stored with the actor's state as part of this message's commit."""
        stream_id = self._host.new_stream_id()
        self.storage.pending.streams_added[stream_id] = encode(attachment)
        self._streams.open(stream_id, self.id, attachment, id_base, id_floor)
        return stream_id

    def streams(self) -> list[StreamInfo]:
        """This actor's open streams with their attachments (still there after a wake)."""
        return [s.info() for s in self._streams.of(self.id)]

    def send(self, stream_id: str, event: str, data: bytes) -> int | None:
        """Queue an event on a stream without blocking; its id, or None if the stream is
        gone (closed, or its consumer fell too far behind: the actor is told separately).
        The consumer sees it once this message's writes are durable (never, if they
        fail): the output gate."""
        stream = self._own(stream_id)
        if stream is None:
            return None
        self._activation.hold(stream)
        return self._streams.send(stream, event, data, hold=True)

    def close_stream(self, stream_id: str, final: tuple[str, bytes] | None = None) -> int | None:
        """Close a stream after an optional last event; the last id sent on it. Like
        `send`, it takes effect once this message's writes are durable."""
        stream = self._own(stream_id)
        self.storage.pending.streams_removed.add(stream_id)
        self.storage.pending.streams_added.pop(stream_id, None)
        if stream is None:
            return None
        self._activation.hold(stream)
        return self._streams.close(stream, final, hold=True)

    def _own(self, stream_id: str) -> Stream | None:
        stream = self._streams.get(stream_id)
        return stream if stream is not None and stream.actor == self.id else None


class Actor:
    """Base class of application actors. One instance handles one message at a time.

    The runtime builds an instance when the actor activates (its storage already loaded)
    and drops it when it hibernates; anything that must survive goes to ``ctx.storage``.
    """

    def __init__(self, ctx: ActorContext) -> None:
        self.ctx = ctx

    async def on_message(self, message: Any) -> Any:
        """Handle an ``ask`` or ``tell``; the return value is the reply."""
        raise NotImplementedError

    async def on_alarm(self) -> None:
        """The alarm fired (it is already cleared; set a new one to repeat)."""

    async def on_stream_closed(self, stream: StreamInfo, reason: str) -> None:
        """A stream ended without the actor closing it: ``disconnected``, ``overflow``,
        ``unclaimed``, or ``lost`` (open when the previous process stopped)."""

    async def on_hibernate(self) -> None:
        """Last call before the instance is dropped (idle, or shutdown); writes commit."""

    def describe(self) -> Mapping[str, Any] | None:
        """A view of this actor that is safe to show to operators and tests (the admin
        view, ``ActorStub.describe()``), or None (the default) to show nothing.

        Return an explicit allow-list of JSON values (counts, states, public ids), never a
        dump of the actor's state or storage: whatever is returned is shown as it is, so a
        secret can only leak if it is named here. The runtime calls it like a message, on
        the actor's own task between two messages (a hibernated actor is woken for it, and
        hibernates again when idle); it should only read."""
        return None


class _Describe:
    """The runtime's own message behind ``ActorStub.describe()``; actors never see it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DESCRIBE"


DESCRIBE: Final = _Describe()


async def receive(actor: Actor, message: Any) -> Any:
    """Hand ``message`` to ``actor``: ``on_message``, or ``describe`` for ``DESCRIBE``
    (its view copied through JSON, so the caller gets plain data detached from the
    actor, and a value that is not JSON fails here, as the handler's error)."""
    if message is DESCRIBE:
        view = actor.describe()
        return None if view is None else loads(dumps(dict(view)))
    return await actor.on_message(message)
