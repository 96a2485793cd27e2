"""Clients that behave like a browser's: an EventSource and a retrying signal sender.

``EventSource`` reconnects as the WHATWG spec says: after a 200 stream ends or the
network fails, it waits the last ``retry:`` and opens the same URL again with
``Last-Event-ID``; any other status ends it for good (recorded in ``failed``: a test
asserts it never happens). Every connection is recorded with the node that served it
(``X-Roomkeeper-Node``), and every event with its id and connection.

``Sender`` POSTs signals with an ``id`` (also put in the signal object, so the recipient
can tell them apart) and retries the same POST on 503, 504 and network errors, as a client
of the protocol's retry-safe ``id`` may: the ones answered 200 are ``acked``.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import attrs
import httpx
import trio

STREAM_TIMEOUT = httpx.Timeout(5, read=30)
RETRYABLE = {502, 503, 504}


@attrs.define
class Received:
    id: int
    event: str
    data: Any
    node: str
    connection: int
    at: float  # time.monotonic()


@attrs.define
class Connection:
    index: int
    status: int
    node: str
    opened: float
    ended: float | None = None
    first_event: float | None = None
    events: int = 0
    retry_only: bool = False  # a 200 that carried no event (nginx's stream_retry)


class EventSource:
    """One client's ``EventSource(URL)``; run ``run`` in a nursery (cancel to close)."""

    def __init__(self, client: httpx.AsyncClient, base: str, room: str, name: str = "") -> None:
        self.client = client
        self.base = base
        self.room = room
        self.name = name or room
        self.retry = 1.0
        self.last_id: str | None = None
        self.events: list[Received] = []
        self.connections: list[Connection] = []
        self.failed: list[tuple[int, str]] = []  # non-200 answers: fatal for a browser
        self.errors: list[str] = []  # network errors (a browser retries those)
        self.session_id: str | None = None
        self.token: str | None = None
        self._changed = trio.Event()

    # -- what was seen -------------------------------------------------------------------
    def signals(self) -> list[Received]:
        return [e for e in self.events if e.event == "signal"]

    def signal_ids(self) -> list[str]:
        return [str(e.data["signal"].get("sid")) for e in self.signals()]

    def sessions(self) -> list[Received]:
        return [e for e in self.events if e.event == "session"]

    def rosters(self) -> list[list[str]]:
        return [list(e.data["peers"]) for e in self.events if e.event == "roster"]

    def nodes(self) -> list[str]:
        return [c.node for c in self.connections if not c.retry_only]

    async def wait_for(self, check: Callable[[], bool], wait: float) -> None:
        """Until ``check()`` holds (re-checked on every event), failing after ``wait`` s."""
        with trio.fail_after(wait):
            while not check():
                self._changed = trio.Event()
                await self._changed.wait()

    # -- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, read, reconnect after ``retry:``, until cancelled or refused."""
        try:
            while True:
                if not await self._one_connection():
                    return  # a browser's EventSource gives up on any answer but 200
                await trio.sleep(self.retry)
        finally:
            self._notify()

    async def wait_session(self, wait: float = 10) -> None:
        await self.wait_for(lambda: self.session_id is not None, wait)

    def _notify(self) -> None:
        self._changed.set()

    async def _one_connection(self) -> bool:
        """One request and its stream; False when the EventSource must give up."""
        headers = {"Last-Event-ID": self.last_id} if self.last_id is not None else {}
        index = len(self.connections)
        try:
            async with self.client.stream(
                "GET",
                f"{self.base}/api/connect",
                params={"room": self.room},
                headers=headers,
                timeout=STREAM_TIMEOUT,
            ) as response:
                node = response.headers.get("x-roomkeeper-node", "")
                conn = Connection(index, response.status_code, node, time.monotonic())
                self.connections.append(conn)
                self._notify()
                if response.status_code != 200:
                    body = (await response.aread()).decode(errors="replace")
                    self.failed.append((response.status_code, body))
                    conn.ended = time.monotonic()
                    return False
                try:
                    await self._read(response, conn)
                finally:
                    conn.ended = time.monotonic()
                    conn.retry_only = conn.events == 0
                    self._notify()
        except httpx.HTTPError as exc:
            self.errors.append(f"{exc.__class__.__name__}: {exc}")
        return True

    async def _read(self, response: httpx.Response, conn: Connection) -> None:
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line == "":
                if "data" in fields:
                    self._dispatch(fields, conn)
                fields = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "retry" and value.isdigit():
                self.retry = int(value) / 1000
            elif name in ("id", "event", "data"):
                fields[name] = value

    def _dispatch(self, fields: dict[str, str], conn: Connection) -> None:
        if "id" in fields:
            self.last_id = fields["id"]
        now = time.monotonic()
        if conn.first_event is None:
            conn.first_event = now
        conn.events += 1
        data = json.loads(fields["data"])
        event = Received(
            int(fields.get("id", "0")),
            fields.get("event", "message"),
            data,
            conn.node,
            conn.index,
            now,
        )
        self.events.append(event)
        if event.event == "session":
            self.session_id = data["session_id"]
            self.token = data["token"]
        self._notify()


async def eventually(check: Callable[[], bool], wait: float, poll: float = 0.05) -> None:
    """Until ``check()`` holds (polled: it may read the database), failing after ``wait`` s."""
    with trio.fail_after(wait):
        while True:
            if check():
                return
            await trio.sleep(poll)


@attrs.define
class Ack:
    sid: str
    sender: str
    to: str
    at: float
    attempts: int


class Sender:
    """Signals from one session, each retried under its ``id`` until answered 200."""

    def __init__(self, client: httpx.AsyncClient, base: str, room: str) -> None:
        self.client = client
        self.base = base
        self.room = room
        self.acked: list[Ack] = []
        self.statuses: list[tuple[int, str, float]] = []  # every answer: status, node, time
        self.retry_after_missing: list[int] = []  # 503s without Retry-After
        self.given_up: list[str] = []

    async def send(
        self, sender: EventSource, to: str, *, patience: float = 20, extra: Any = None
    ) -> bool:
        """POST one signal (retrying); True once it is acknowledged."""
        assert sender.session_id is not None and sender.token is not None
        sid = uuid.uuid4().hex
        body = {
            "sender": sender.session_id,
            "to": to,
            "token": sender.token,
            "id": sid,
            "signal": {"sid": sid, "extra": extra},
        }
        deadline = time.monotonic() + patience
        attempts = 0
        while time.monotonic() < deadline:
            attempts += 1
            try:
                response = await self.client.post(
                    f"{self.base}/api/signal",
                    params={"room": self.room},
                    json=body,
                    timeout=httpx.Timeout(10),
                )
            except httpx.HTTPError:
                self.statuses.append((0, "", time.monotonic()))
                await trio.sleep(0.2)
                continue
            node = response.headers.get("x-roomkeeper-node", "")
            self.statuses.append((response.status_code, node, time.monotonic()))
            if response.status_code == 200:
                self.acked.append(Ack(sid, sender.session_id, to, time.monotonic(), attempts))
                return True
            if response.status_code == 503 and "retry-after" not in response.headers:
                self.retry_after_missing.append(response.status_code)
            if response.status_code not in RETRYABLE:
                raise AssertionError(f"signal answered {response.status_code}: {response.text}")
            await trio.sleep(min(float(response.headers.get("retry-after", "0.2")), 1.0))
        self.given_up.append(sid)
        return False


def delivered_once(acked: list[Ack], recipients: dict[str, EventSource]) -> list[str]:
    """Problems with the delivery of acknowledged signals: each must have reached its
    recipient's EventSource exactly once (by signal id). [] if none."""
    problems = []
    seen: dict[str, dict[str, int]] = {}
    for session, source in recipients.items():
        counts: dict[str, int] = {}
        for sid in source.signal_ids():
            counts[sid] = counts.get(sid, 0) + 1
        seen[session] = counts
    for ack in acked:
        counts = seen.get(ack.to)
        if counts is None:
            continue
        n = counts.get(ack.sid, 0)
        if n != 1:
            problems.append(f"signal {ack.sid} to {ack.to[:8]} delivered {n} times")
    return problems


class Conversation:
    """Two EventSources in one room signalling each other without pause (each POST
    retried until acknowledged), as two browsers negotiating a call would."""

    def __init__(self, client: httpx.AsyncClient, base: str, room: str) -> None:
        self.room = room
        self.alice = EventSource(client, base, room, "alice")
        self.bob = EventSource(client, base, room, "bob")
        self.sender = Sender(client, base, room)
        self.talking = True

    @property
    def sources(self) -> list[EventSource]:
        return [self.alice, self.bob]

    def recipients(self) -> dict[str, EventSource]:
        return {s.session_id: s for s in self.sources if s.session_id is not None}

    async def start(self, nursery: trio.Nursery) -> None:
        for source in self.sources:
            nursery.start_soon(source.run)
        for source in self.sources:
            await source.wait_session()
        both = {self.alice.session_id, self.bob.session_id}
        await self.alice.wait_for(lambda: any(both <= set(r) for r in self.alice.rosters()), 10)
        nursery.start_soon(self._talk, self.alice, self.bob)
        nursery.start_soon(self._talk, self.bob, self.alice)

    async def _talk(self, frm: EventSource, to: EventSource) -> None:
        assert to.session_id is not None
        while self.talking:
            await self.sender.send(frm, to.session_id)
            await trio.sleep(0.05)

    async def finish(self, wait: float = 10) -> list[str]:
        """Stop talking, wait for every acknowledged signal to arrive (or ``wait`` s);
        the delivery problems left (see ``delivered_once``)."""
        self.talking = False
        await trio.sleep(0.2)  # the POSTs in flight are answered
        recipients = self.recipients()
        with trio.move_on_after(wait):
            await eventually(lambda: not delivered_once(self.sender.acked, recipients), wait)
        return delivered_once(self.sender.acked, recipients)

    def resumed_after(self, source: EventSource, t0: float, not_on: str) -> float | None:
        """Seconds from ``t0`` to the first ``session`` event of ``source`` served by
        another node than ``not_on`` after ``t0``, if any yet."""
        for event in source.sessions():
            if event.at > t0 and event.node != not_on:
                return event.at - t0
        return None

    def longest_gap(self, t0: float) -> float:
        """The longest stretch after ``t0`` without an acknowledged POST."""
        times = [t0, *sorted(a.at for a in self.sender.acked if a.at > t0)]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def check_history(source: EventSource) -> list[str]:
    """What a browser would hold against the stream: one session throughout, ids that
    always grow, no answer but 200. [] if all is well."""
    problems = [f"{source.name}: answered {status}: {body}" for status, body in source.failed]
    sessions = {e.data["session_id"] for e in source.sessions()}
    if len(sessions) != 1:
        problems.append(f"{source.name}: sessions {sessions}")
    if any(not e.data["resumed"] for e in source.sessions()[1:]):
        problems.append(f"{source.name}: a reconnection was not resumed")
    ids = [e.id for e in source.events]
    if any(b <= a for a, b in itertools.pairwise(ids)):
        problems.append(f"{source.name}: event ids did not grow: {ids}")
    return problems
