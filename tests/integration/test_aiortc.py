"""Two aiortc peers, each in its own asyncio program (aiortc_peer.py), signal through a
real ``roomkeeper serve`` with roomkeeper.client, open a data channel and exchange a
message; and still do when one peer's event stream is dropped in the middle of the
negotiation, the client resuming its session with ``Last-Event-ID``.

The drop: that peer reaches the server through a TCP proxy; the test holds back what the
server sends on the peer's event stream, lets the offerer send its offer, waits until the
signal (offer or answer) the peer waits for is held back, then closes that connection.
The signal was sent on a stream the peer never read: only the resumed stream brings it.

aiortc is in the test extra; without it these tests skip, except in CI (CI=true), where
they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from .conftest import ServerFactory, ServerProcess, new_room

PEER = Path(__file__).with_name("aiortc_peer.py")
WAIT = 30.0
"""The longest any one step may take (a run takes about a second or two)."""
GREETING = {"offer": "hello from the offerer", "answer": "hello from the answerer"}


@pytest.fixture(autouse=True)
def _aiortc() -> None:
    try:
        import aiortc  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("aiortc is not installed: .ci/run installs the test extra, which has it")
        pytest.skip("aiortc is not installed (pip install -e '.[test]')")


@pytest.fixture
def server(server_factory: ServerFactory) -> ServerProcess:
    # A long grace: a dropped peer must come back to the same session (its signals).
    return server_factory(grace="30")


# --- a peer program -----------------------------------------------------------------------


@attrs.define(eq=False)
class Program:
    """One aiortc_peer.py process; ``step`` reads its JSON lines up to the one named."""

    role: str
    process: trio.Process
    log: Path
    steps: list[dict[str, Any]] = attrs.Factory(list)
    _buffer: bytes = b""

    async def step(self, name: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        with trio.fail_after(WAIT):
            while True:
                line, newline, rest = self._buffer.partition(b"\n")
                if newline:
                    self._buffer = rest
                    self.steps.append(json.loads(line))
                    if self.steps[-1]["step"] == name:
                        return self.steps[-1]
                    continue
                chunk = await self.process.stdout.receive_some()
                if not chunk:
                    raise AssertionError(f"the {self.role} ended before {name!r}: {self.report()}")
                self._buffer += chunk

    async def go(self) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(b"go\n")

    async def finish(self) -> dict[str, Any]:
        done = await self.step("done")
        with trio.fail_after(WAIT):
            status = await self.process.wait()
        assert status == 0, self.report()
        return done

    def named(self, name: str) -> list[dict[str, Any]]:
        return [step for step in self.steps if step["step"] == name]

    def report(self) -> str:
        return f"steps {self.steps}\nstderr:\n{self.log.read_text(errors='replace')}"


@asynccontextmanager
async def program(tmp: Path, url: str, room: str, role: str, *flags: str) -> AsyncIterator[Program]:
    log = tmp / f"{role}.log"
    args = [sys.executable, str(PEER), url, room, role, "--timeout", str(2 * WAIT), *flags]
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        yield Program(role, process, log)
    finally:
        if process.returncode is None:
            process.kill()
        with trio.move_on_after(5, shield=True):
            await process.wait()


def check_loopback(step: dict[str, Any]) -> None:
    """ICE candidates: host ones on 127.0.0.1, and only those."""
    assert step["candidates"], step
    assert all(c.startswith("127.0.0.1 ") and c.endswith(" host") for c in step["candidates"])


# --- the proxy ----------------------------------------------------------------------------


@attrs.define(eq=False)
class Link:
    down: trio.SocketStream
    up: trio.SocketStream
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    sent: bytes = b""  # every request on this connection (a few kilobytes)
    held: bool = False
    withheld: bytes = b""


@attrs.define(eq=False)
class Proxy:
    """A TCP proxy to the server. ``hold()`` keeps what the server sends on the open
    connections (new ones are not held); ``withheld(marker)`` waits until the held bytes
    contain ``marker``; ``cut()`` closes the held connections."""

    target: ServerProcess
    url: str = ""
    links: list[Link] = attrs.Factory(list)
    _news: trio.Event = attrs.Factory(trio.Event)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        task_status.started()
        await trio.serve_listeners(self._link, listeners)

    async def _link(self, down: trio.SocketStream) -> None:
        link = Link(down, await trio.open_tcp_stream(self.target.host, self.target.port))
        self.links.append(link)
        with link.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._upward, link, nursery.cancel_scope)
                nursery.start_soon(self._downward, link, nursery.cancel_scope)
        await link.up.aclose()

    async def _upward(self, link: Link, done: trio.CancelScope) -> None:
        try:
            async for data in link.down:
                link.sent += data
                await link.up.send_all(data)
        except trio.BrokenResourceError:
            pass
        done.cancel()

    async def _downward(self, link: Link, done: trio.CancelScope) -> None:
        try:
            async for data in link.up:
                if link.held:
                    link.withheld += data
                    self._news.set()
                    self._news = trio.Event()
                else:
                    await link.down.send_all(data)
        except trio.BrokenResourceError:
            pass
        done.cancel()

    def hold(self) -> None:
        for link in self.links:
            link.held = True

    async def withheld(self, marker: bytes) -> None:
        with trio.fail_after(WAIT):
            while not any(marker in link.withheld for link in self.links):
                await self._news.wait()

    def cut(self) -> dict[Link, int]:
        """Close the held connections; how much each connection had sent (a mark)."""
        for link in self.links:
            if link.held:
                link.scope.cancel()
        return {link: len(link.sent) for link in self.links}

    def requests_since(self, mark: dict[Link, int]) -> list[bytes]:
        """The heads of the requests sent since ``mark``, on old or new connections
        (httpx reuses idle ones)."""
        sent = b"".join(link.sent[mark.get(link, 0) :] for link in self.links)
        return [b"GET " + head.partition(b"\r\n\r\n")[0] for head in sent.split(b"GET ")[1:]]


# --- the tests ----------------------------------------------------------------------------


async def test_two_aiortc_peers_connect_a_data_channel(
    server: ServerProcess, tmp_path: Path
) -> None:
    room = new_room("aiortc")
    async with (
        program(tmp_path, server.url, room, "answer") as answerer,
        program(tmp_path, server.url, room, "offer") as offerer,
    ):
        check_loopback(await offerer.step("offer-sent"))
        check_loopback(await answerer.step("answer-sent"))
        assert (await offerer.finish())["received"] == GREETING["answer"]
        assert (await answerer.finish())["received"] == GREETING["offer"]
        assert not offerer.named("reconnected") and not answerer.named("reconnected")


@pytest.mark.parametrize(
    ("dropped", "awaited"),
    [("answer", b'"type":"offer"'), ("offer", b'"type":"answer"')],
    ids=["answerer-misses-the-offer", "offerer-misses-the-answer"],
)
async def test_a_stream_dropped_mid_negotiation_resumes_and_connects(
    server: ServerProcess, tmp_path: Path, nursery: trio.Nursery, dropped: str, awaited: bytes
) -> None:
    room = new_room("aiortc-drop")
    proxy = Proxy(server)
    await nursery.start(proxy.run)
    via = {role: proxy.url if role == dropped else server.url for role in ("offer", "answer")}
    async with (
        program(tmp_path, via["answer"], room, "answer") as answerer,
        program(tmp_path, via["offer"], room, "offer", "--gate") as offerer,
    ):
        victim = {"offer": offerer, "answer": answerer}[dropped]
        await offerer.step("ready")  # both are in the room: the victim's stream is open
        if not victim.named("joined"):
            # its session and roster are through the proxy: held, they would leave it
            # with no session to resume, and it would join afresh
            await victim.step("joined")
        proxy.hold()
        await offerer.go()
        await offerer.step("offer-sent")
        await proxy.withheld(awaited)  # sent to the victim, and it has not seen it
        mark = proxy.cut()

        assert (await offerer.finish())["received"] == GREETING["answer"]
        assert (await answerer.finish())["received"] == GREETING["offer"]
        [reconnected] = victim.named("reconnected")
        assert reconnected["resumed"] is True, victim.report()
        resumes = [r for r in proxy.requests_since(mark) if r.startswith(b"GET /api/connect")]
        assert resumes, "the peer did not reconnect through the proxy"
        assert b"\r\nlast-event-id: " in resumes[0].lower()
        other = {"offer": answerer, "answer": offerer}[dropped]
        assert not other.named("reconnected")
