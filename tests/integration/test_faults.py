"""Faults during traffic: kill -9 and SIGTERM with requests in flight, then a restart on
the same SQLite file; storage that fails (a full disk for real, in a mount namespace,
and a failing backend injected into an embedded server); a room whose handler raises.
What test_lifecycle.py already shows on a quiet server (restarts after SIGTERM and
SIGKILL, a grace period ending after a restart) is not repeated."""

from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from roomkeeper import server as server_module
from roomkeeper.config import Config
from roomkeeper.runtime import MemoryBackend, StorageBackend, StorageError
from roomkeeper.runtime.ids import ActorId
from roomkeeper.runtime.storage import WriteSet
from roomkeeper.testing import AsyncEmbeddedServer, serve_async
from roomkeeper_actors.signaling.room import Room
from roomkeeper_actors.signaling.state import RoomState

from .conftest import (
    FAST,
    Event,
    Peer,
    ServerFactory,
    ServerProcess,
    assert_error,
    connect_deferred,
    connect_refused,
    join,
    leave,
    new_room,
    send,
    send_ok,
    sync,
)


async def _stop(server: ServerProcess, sig: int) -> int:
    return await trio.to_thread.run_sync(server.stop, sig)


async def _start(server: ServerProcess) -> None:
    await trio.to_thread.run_sync(server.start)


ADMIN = {"admin_token": "faults-admin-token-0123456789"}


async def connected(client: httpx.AsyncClient, base: str, room: str, sid: str) -> bool:
    """Whether the room counts ``sid`` as connected (from the admin view)."""
    headers = {"Authorization": f"Bearer {ADMIN['admin_token']}"}
    response = await client.get(f"{base}/admin/rooms/{room}", headers=headers)
    assert response.status_code == 200, response.text
    sessions = response.json()["view"]["sessions"]
    (session,) = [s for s in sessions if s["session_id"] == sid]
    return bool(session["connected"])


async def absent(client: httpx.AsyncClient, base: str, room: str, witness: Peer) -> Peer:
    """A session whose stream has dropped, as the room knows: signals to it queue."""
    async with join(client, base, room) as peer:
        pass
    with trio.fail_after(5):
        while await connected(client, base, room, peer.session_id):  # noqa: ASYNC110
            await trio.sleep(0.02)
    await sync(client, witness)  # past the roster with its arrival
    return peer


# --- kill -9 and SIGTERM in the middle of traffic ------------------------------------------------


@attrs.define
class Ledger:
    """What clients were told: sessions made (with the last event id each saw) and
    signals answered 200, per recipient."""

    sessions: dict[str, tuple[str, str, int]] = attrs.Factory(dict)  # sid: room, token, id
    accepted: dict[str, list[int]] = attrs.Factory(dict)
    attempted: dict[str, list[int]] = attrs.Factory(dict)


async def _joiner(client: httpx.AsyncClient, base: str, rooms: list[str], ledger: Ledger) -> None:
    """Opens sessions one after another and keeps their streams open."""
    async with AsyncExitStack() as stack:
        for n in itertools.count():
            room = rooms[n % len(rooms)]
            try:
                peer = await stack.enter_async_context(join(client, base, room))
            except (httpx.HTTPError, AssertionError, EOFError):
                await trio.sleep(0.01)
                continue
            ledger.sessions[peer.session_id] = (room, peer.token, peer.stream.last_id)


async def _sender(
    client: httpx.AsyncClient, base: str, frm: Peer, to: list[Peer], ledger: Ledger
) -> None:
    """Signals with growing numbers to each of ``to`` in turn, one at a time."""
    for n in itertools.count():
        peer = to[n % len(to)]
        ledger.attempted.setdefault(peer.session_id, []).append(n)
        try:
            response = await send(client, base, frm, peer, {"n": n})
        except httpx.HTTPError:
            await trio.sleep(0.01)
            continue
        if response.status_code == 200:
            ledger.accepted.setdefault(peer.session_id, []).append(n)


def _queued_signals(events: list[Event]) -> list[int]:
    return [
        e.data["signal"]["n"] for e in events if e.event == "signal" and "n" in e.data["signal"]
    ]


async def test_kill_9_during_traffic_loses_no_answered_join_and_no_queued_signal(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    """Sessions being made in three rooms and signals being queued for absent peers when
    the server is killed: after a restart on the same file, every session whose join was
    answered resumes with its token, with event ids above those it saw, and every signal
    answered 200 for an absent peer arrives, in order, once; the only other one that
    may arrive is the one in flight at the kill (committed, its answer lost)."""
    server = server_factory(grace="10", queue_limit="100000", rate_burst="100000", **ADMIN)
    base = server.url
    rooms = [new_room() for _ in range(3)]
    ledger = Ledger()
    async with AsyncExitStack() as stack:
        senders = [await stack.enter_async_context(join(client, base, room)) for room in rooms]
        targets = [
            [await absent(client, base, room, s) for _ in range(2)]
            for room, s in zip(rooms, senders, strict=True)
        ]
        for room, sender in zip(rooms, senders, strict=True):
            ledger.sessions[sender.session_id] = (room, sender.token, sender.stream.last_id)
        for room, peers in zip(rooms, targets, strict=True):
            for peer in peers:
                ledger.sessions[peer.session_id] = (room, peer.token, peer.stream.last_id)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_joiner, client, base, rooms, ledger)
            for sender, peers in zip(senders, targets, strict=True):
                nursery.start_soon(_sender, client, base, sender, peers, ledger)
            await trio.sleep(1.0)
            assert await _stop(server, signal.SIGKILL) == -signal.SIGKILL
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
    assert sum(map(len, ledger.accepted.values())) > 20 and len(ledger.sessions) > 9

    await _start(server)
    async with AsyncExitStack() as stack:
        resumed: dict[str, Peer] = {}
        for sid, (room, token, last_id) in ledger.sessions.items():
            peer = await stack.enter_async_context(
                join(client, server.url, room, session_id=sid, token=token)
            )
            assert peer.resumed and peer.session_id == sid, sid
            assert peer.first[0].id > last_id
            resumed[sid] = peer
        for peers in targets:
            for peer in peers:
                got = _queued_signals(await sync(client, resumed[peer.session_id]))
                accepted = ledger.accepted.get(peer.session_id, [])
                attempted = ledger.attempted[peer.session_id]
                assert got[: len(accepted)] == accepted
                extra = got[len(accepted) :]
                assert extra in ([], attempted[len(accepted) : len(accepted) + 1]), extra


async def test_sigterm_during_traffic_delivers_everything_accepted(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    """Signals flowing to a connected and to an absent peer when SIGTERM comes: every
    stream ends with bye shutdown; what was answered 200 is on the connected peer's
    stream before its bye, or queued for the absent one; after the restart both resume
    and get the rest (Last-Event-ID replay, the queue), each signal once, in order."""
    server = server_factory(grace="10", queue_limit="100000", rate_burst="100000", **ADMIN)
    base = server.url
    room = new_room()
    ledger = Ledger()
    async with join(client, base, room) as sender, join(client, base, room) as present:
        await sender.stream.next()
        away = await absent(client, base, room, sender)
        await sync(client, present)
        received: list[Event] = []

        async def read_present() -> None:
            received.extend(await present.stream.expect_end(wait=20))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_present)
            for peers in ([present], [away]):
                nursery.start_soon(_sender, client, base, sender, peers, ledger)
            await trio.sleep(0.7)
            assert await _stop(server, signal.SIGTERM) == 0
            nursery.cancel_scope.deadline = trio.current_time() + 5
            with trio.move_on_after(5):
                while not received or received[-1].event != "bye":  # noqa: ASYNC110
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert (received[-1].event, received[-1].data) == ("bye", {"reason": "shutdown"})
    on_stream = _queued_signals(received)
    accepted_present = ledger.accepted.get(present.session_id, [])
    assert len(accepted_present) > 5 and len(ledger.accepted.get(away.session_id, [])) > 5

    await _start(server)
    base = server.url
    last = received[-1].id
    params = {"session_id": present.session_id, "token": present.token}
    async with (
        join(client, base, room, headers={"Last-Event-ID": str(last)}, **params) as present2,
        join(client, base, room, session_id=away.session_id, token=away.token) as away2,
    ):
        assert present2.resumed and away2.resumed
        replayed = _queued_signals(await sync(client, present2))
        queued = _queued_signals(await sync(client, away2))
    delivered = on_stream + replayed
    assert len(set(delivered)) == len(delivered) and delivered == sorted(delivered)
    assert set(accepted_present) <= set(delivered)
    assert queued[: len(ledger.accepted[away.session_id])] == ledger.accepted[away.session_id]
    assert len(queued) - len(ledger.accepted[away.session_id]) <= 1


# --- storage that fails -----------------------------------------------------------------------


@attrs.define
class FlakyBackend:
    """A memory backend whose writes fail while ``failing`` (reads keep working, as on
    a full disk)."""

    inner: MemoryBackend = attrs.Factory(MemoryBackend)
    failing: bool = False
    failures: int = 0

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def load(self, actor: ActorId) -> Any:
        return await self.inner.load(actor)

    async def commit(self, actor: ActorId, writes: WriteSet) -> None:
        if self.failing:
            self.failures += 1
            raise StorageError("storage failed: database or disk is full (injected)")
        await self.inner.commit(actor, writes)

    async def alarms(self) -> list[tuple[ActorId, float]]:
        return await self.inner.alarms()

    async def streams(self) -> Any:
        return await self.inner.streams()

    async def save_positions(self, positions: list[tuple[ActorId, str, int]]) -> None:
        if self.failing:
            raise StorageError("storage failed (injected)")
        await self.inner.save_positions(positions)

    async def names(self, namespace: str, *, after: str = "", limit: int = 100) -> list[str]:
        return await self.inner.names(namespace, after=after, limit=limit)


@pytest.fixture
async def flaky(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[AsyncEmbeddedServer, FlakyBackend]]:
    backend = FlakyBackend()

    def make_backend(_: Config, node: object = None) -> StorageBackend:
        return backend  # type: ignore[return-value]

    monkeypatch.setattr(server_module, "make_backend", make_backend)
    async with serve_async(grace=30, new_sessions_burst=1000, **ADMIN) as running:
        yield running, backend


STORAGE_FAILED = "Service Unavailable: storage failed"


def _storage_503(response: httpx.Response) -> None:
    body = assert_error(response, 503)
    assert body["error"] == STORAGE_FAILED
    assert response.headers["Retry-After"] == "1"


async def test_failing_storage_is_503_and_nothing_of_it_is_announced(
    client: httpx.AsyncClient, flaky: tuple[AsyncEmbeddedServer, FlakyBackend]
) -> None:
    """While writes fail, a request that needs one is 503 (JSON, Retry-After) and leaves
    no trace: no roster with a session that was never made, no bye for a leave that did
    not happen, no queued signal, and no signal to a connected peer either: it needs a
    write too (its replay history entry), and the output gate holds what a message sends
    on streams until its commit succeeds (docs/architecture.md). Retried with its id once
    storage works, it is delivered once. When storage works again, so does everything,
    and what happened meanwhile (a stream that dropped) is caught up with."""
    server, backend = flaky
    base, room = server.url, new_room()
    async with join(client, base, room) as a, join(client, base, room) as b:
        await a.stream.next()
        away = await absent(client, base, room, a)
        assert [e.event for e in await sync(client, b)] == ["roster"]
        roster = [a.session_id, b.session_id, away.session_id]

        backend.failing = True
        assert await connect_deferred(client, base, {"room": room}) == STORAGE_FAILED
        _storage_503(await leave(client, base, b))
        _storage_503(await send(client, base, a, away, {"queued": "never"}))
        live = {"live": "not committed"}
        _storage_503(await send(client, base, a, b, live, id="live-1"))
        backend.failing = False  # sync() needs its marker signals committed
        # Nothing was announced.
        assert [e.data for e in await sync(client, a)] == []
        assert [e.data for e in await sync(client, b)] == []
        for _ in range(2):  # the retry delivers it, once
            await send_ok(client, base, a, b, live, id="live-1")
        assert [e.data for e in await sync(client, b)] == [{"from": a.session_id, "signal": live}]
        assert [s.session_id for s in await server.sessions(room)] == roster
        assert backend.failures >= 4

        async with join(client, base, room) as c:
            assert c.roster == [*roster, c.session_id]
            assert (await leave(client, base, b)).status_code == 200
            assert (await b.stream.expect_end())[-1].data == {"reason": "left"}
            await send_ok(client, base, a, away, {"queued": "now"})
        async with join(client, base, room, session_id=away.session_id, token=away.token) as back:
            assert back.resumed
            assert [e.data["signal"] for e in await sync(client, back)] == [{"queued": "now"}]


async def test_a_stream_that_drops_while_storage_fails_is_recorded_later(
    client: httpx.AsyncClient, flaky: tuple[AsyncEmbeddedServer, FlakyBackend]
) -> None:
    """The room cannot record the drop while writes fail; the runtime tries again (after
    1 s, 2 s, ...), and the session's grace period is on the record once they work."""
    server, backend = flaky
    base, room = server.url, new_room()
    actor = server.system.get("rooms", room).id
    async with join(client, base, room) as a:
        async with join(client, base, room) as b:
            await a.stream.next()
            backend.failing = True
        await trio.sleep(0.5)
        assert backend.failures >= 1
        backend.failing = False

        def stored_expiry() -> Any:
            record = backend.inner.values.get(actor.hex, {}).get(f"s/{b.session_id}")
            return None if record is None else json.loads(record)["expires_at"]

        with trio.fail_after(5):
            while stored_expiry() is None:  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert await sync(client, a) == []  # a drop within the grace period changes no roster


# --- a full disk, for real ---------------------------------------------------------------------


class TmpfsServer(ServerProcess):
    """A server in its own mount namespace whose data folder is a tiny tmpfs, which the
    test fills through /proc/PID/root (root can write to a read-only file, not to a full
    disk)."""

    def start(self, wait: float = 20) -> None:
        data = Path(self.flags["--storage"]).parent
        inner = [sys.executable, "-m", "roomkeeper", "serve", "--port", "0"]
        for flag, value in self.flags.items():
            inner += [flag, value]
        script = 'mount -t tmpfs -o size=2m tmpfs "$1" && shift && exec "$@"'
        args = [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            str(data),
            *inner,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=log, text=True, env=env
            )
        line = self._first_line(wait)
        if "serving on" not in line:
            self.kill()
            raise RuntimeError(f"server did not start: {line!r}\n{self.log()}")
        self.url = line.split("serving on ", 1)[1].strip()

    def data_dir(self) -> Path:
        assert self.proc is not None
        return Path(f"/proc/{self.proc.pid}/root") / Path(
            self.flags["--storage"]
        ).parent.relative_to("/")


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


@pytest.fixture
def tmpfs_server(tmp_path: Path) -> Iterator[TmpfsServer]:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) for a mount namespace")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace: {probe.stderr!r}")
    data = tmp_path / "data"
    data.mkdir()
    flags = {
        **FAST,
        "--storage": str(data / "rooms.sqlite3"),
        "--grace": "30",
        "--admin-token": ADMIN["admin_token"],
    }
    server = TmpfsServer(flags, tmp_path / "server.log")
    server.start()
    yield server
    server.kill()


async def test_a_full_disk_is_503_and_the_server_recovers(
    client: httpx.AsyncClient, tmpfs_server: TmpfsServer
) -> None:
    base, room = tmpfs_server.url, new_room()
    async with join(client, base, room) as a:
        away = await absent(client, base, room, a)
        filler = await trio.to_thread.run_sync(_fill, tmpfs_server.data_dir())
        # SQLite first reuses the space its WAL already has (a background checkpoint may
        # have let the WAL start over): signals to oneself, answered 200 and kept, take
        # it up until a commit needs space the disk does not have.
        for taking_up in range(500):
            response = await send(client, base, a, a, {"taking up": taking_up})
            if response.status_code != 200:
                break
        _storage_503(response)
        assert await connect_deferred(client, base, {"room": new_room()}) == STORAGE_FAILED
        _storage_503(await send(client, base, a, away, {"n": "lost"}))
        # A signal to a connected peer is committed too (its replay history entry).
        _storage_503(await send(client, base, a, a, {"to myself": "not committed"}))
        assert "database or disk is full" in tmpfs_server.log()
        filler.unlink()
        await send_ok(client, base, a, away, {"n": "kept"})
        async with join(client, base, new_room()) as b:
            assert not b.resumed
        async with join(client, base, room, session_id=away.session_id, token=away.token) as back:
            assert [e.data["signal"] for e in await sync(client, back)] == [{"n": "kept"}]
    assert await _stop(tmpfs_server, signal.SIGTERM) == 0


# --- a room whose handler raises ---------------------------------------------------------------


async def test_a_room_whose_handler_raises_answers_500_and_carries_on(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that raises in a room's handler: that request gets a JSON 500, nothing of it
    is kept or announced, and the room (rebuilt from storage) and all others go on."""
    signal_rule = RoomState.signal

    def exploding_signal(self: RoomState, now: float, **kw: Any) -> Any:
        if b'"explode"' in kw["payload"]:  # the payload comes as JSON text
            raise RuntimeError("a bug in the rules")
        return signal_rule(self, now, **kw)

    send_all = Room._send_all
    explode_next_connect = False

    def exploding_send_all(self: Room, *args: Any) -> None:
        if explode_next_connect:
            raise RuntimeError("a bug after the stream was opened")
        send_all(self, *args)

    monkeypatch.setattr(RoomState, "signal", exploding_signal)
    monkeypatch.setattr(Room, "_send_all", exploding_send_all)
    async with serve_async(grace=30, **ADMIN) as server:
        base, room, other = server.url, new_room(), new_room()
        async with (
            join(client, base, room) as a,
            join(client, base, room) as b,
            join(client, base, other) as c,
        ):
            await a.stream.next()
            failed = await send(client, base, a, b, {"explode": True})
            assert assert_error(failed, 500)["error"] == "Internal Server Error: the room failed"
            await send_ok(client, base, a, b, {"n": 1})
            assert [e.data["signal"] for e in await sync(client, b)] == [{"n": 1}]

            explode_next_connect = True
            assert_error(await connect_refused(client, base, {"room": room}), 500)
            explode_next_connect = False
            assert await sync(client, a) == [] and await sync(client, b) == []  # no ghost
            assert [s.session_id for s in await server.sessions(room)] == [
                a.session_id,
                b.session_id,
            ]
            assert server.system.streams.count("rooms") == 3

            await send_ok(client, base, c, c, {"other": "room"})
            assert [e.data["signal"] for e in await sync(client, c)] == [{"other": "room"}]
            async with join(client, base, room) as d:
                assert d.roster == [a.session_id, b.session_id, d.session_id]
