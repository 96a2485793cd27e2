#!/usr/bin/env python
"""Load generator for the relay path (issue 7): roomkeeper, or the bare baseline.

A small HTTP/1.1 client over raw trio sockets (keep-alive POSTs, a minimal chunked-SSE
parser), so that the generator is not the bottleneck: it reports its own CPU use
(``gen_cpu_pct``, % of one core over the measured window); above ~70 % its figures are
suspect.

    python bench/loadgen.py throughput  --url URL [--protocol roomkeeper|baseline]
    python bench/loadgen.py latency     --url URL --rate 200[,400,...]
    python bench/loadgen.py capacity    --url URL --streams 10000 --pid SERVER_PID [--idle 30]
    python bench/loadgen.py storm       --url URL --streams 10000 [--wait-restart]
    python bench/loadgen.py hibernation --url URL --rooms 100000 --pid SERVER_PID

Every mode sets up ``--rooms`` rooms of ``--peers`` peers, each peer holding an SSE stream
(``GET /api/connect``). Signals go from each peer to the next one of its room, as
``POST /api/signal``; the signal object carries the POST's start time, so latency is from
the POST's start to the event's arrival on the recipient's stream (one clock, one process).

- ``throughput``: ``--concurrency`` POSTs in flight all the time (closed loop) for
  ``--duration`` seconds after ``--warmup``: delivered signals/s, latency, statuses.
  With ``--batch N`` (roomkeeper only), each POST is the batch form carrying N signals
  to the same peer, as a burst of trickled ICE candidates would be.
- ``latency``: an open loop at a fixed offered rate (several rates in turn, on the same
  streams); a POST starts at its scheduled time if a connection is free (``lag`` says
  how late they started when none was).
- ``capacity``: ``--streams`` idle streams opened ``--concurrency`` at a time: streams
  opened per second, server RSS per stream (``VmRSS`` of ``--pid`` before and after),
  then ``--idle`` seconds of holding them: server CPU % (utime+stime) and heartbeats.
- ``storm``: ``capacity``, then every client reconnects at once: after the server's
  restart (``--wait-restart``: print ``STORM-READY``, wait for the streams to end and for
  a ``GO`` line on stdin) or after dropping its own connections; time until all are back
  (their ``session`` event arrived).
- ``hibernation`` (roomkeeper only; run the server with ``--hibernate-after 1`` and a long
  ``--grace``): ``--rooms`` rooms of one session whose stream is then dropped; once every
  room hibernated (``/metrics``), server RSS per hibernated room; then ``--sample`` of the
  rooms get their session's stream back, hibernate again, and each is woken by a signal to
  itself: wake-on-signal latency (then a second, warm, signal for comparison).

The last line on stdout is ``RESULT {json}``; a human summary goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import random
import resource
import select
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import trio
from orjson import loads

RECV = 65536
LINGER_0 = struct.pack("ii", 1, 0)
now = time.perf_counter


# --- protocols -------------------------------------------------------------------------


class Protocol:
    """What differs between roomkeeper and the baseline: credentials and the POST body."""

    name = "baseline"

    def credentials(self, session: dict[str, Any]) -> tuple[str, str | None]:
        return session["session_id"], None

    def connect_path(self, room: str, session_id: str | None, token: str | None) -> bytes:
        return f"/api/connect?room={room}".encode()

    def signal_prefix(self, sender: str, token: str | None, to: str) -> bytes:
        """The body up to the signal's time stamp: ``prefix + b"%d}}" % t``."""
        return b'{"sender":"%s","to":"%s","signal":{"t":' % (sender.encode(), to.encode())

    def batch_prefix(self, sender: str, token: str | None, to: str) -> bytes:
        raise NotImplementedError("the baseline has no batch form")


class Roomkeeper(Protocol):
    name = "roomkeeper"

    def credentials(self, session: dict[str, Any]) -> tuple[str, str | None]:
        return session["session_id"], session["token"]

    def connect_path(self, room: str, session_id: str | None, token: str | None) -> bytes:
        path = f"/api/connect?room={room}"
        if session_id is not None and token is not None:
            path += f"&session_id={session_id}&token={token}"
        return path.encode()

    def signal_prefix(self, sender: str, token: str | None, to: str) -> bytes:
        assert token is not None
        return b'{"sender":"%s","to":"%s","token":"%s","signal":{"t":' % (
            sender.encode(),
            to.encode(),
            token.encode(),
        )

    def batch_prefix(self, sender: str, token: str | None, to: str) -> bytes:
        """The batch form, up to its first signal's time stamp."""
        assert token is not None
        return b'{"sender":"%s","token":"%s","signals":[{"to":"%s","signal":{"t":' % (
            sender.encode(),
            token.encode(),
            to.encode(),
        )


PROTOCOLS: dict[str, Protocol] = {"roomkeeper": Roomkeeper(), "baseline": Protocol()}


# --- HTTP/1.1 over a raw trio socket ----------------------------------------------------


class HttpError(Exception):
    """The connection broke or the server answered something unparseable."""


class Conn:
    """One HTTP/1.1 connection: send bytes, read a response head and body."""

    __slots__ = ("buf", "last_used", "sock")

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.buf = b""
        self.last_used = now()

    @classmethod
    async def open(cls, host: str, port: int) -> Conn:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    async def send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            sent = await self.sock.send(view)
            view = view[sent:]

    async def fill(self) -> None:
        data = await self.sock.recv(RECV)
        if not data:
            raise HttpError("connection closed")
        self.buf += data

    async def read_head(self) -> tuple[int, dict[bytes, bytes]]:
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > 65536:
                raise HttpError("response head too long")
            await self.fill()
        head, self.buf = self.buf[:end], self.buf[end + 4 :]
        lines = head.split(b"\r\n")
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise HttpError(f"bad status line {lines[0][:80]!r}") from None
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    async def read_body(self, headers: dict[bytes, bytes]) -> bytes:
        length = headers.get(b"content-length")
        if length is not None:
            size = int(length)
            while len(self.buf) < size:
                await self.fill()
            body, self.buf = self.buf[:size], self.buf[size:]
            return body
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while True:
                while (eol := self.buf.find(b"\r\n")) < 0:
                    await self.fill()
                size = int(self.buf[:eol].split(b";")[0], 16)
                while len(self.buf) < eol + 2 + size + 2:
                    await self.fill()
                parts.append(self.buf[eol + 2 : eol + 2 + size])
                self.buf = self.buf[eol + 2 + size + 2 :]
                if size == 0:
                    return b"".join(parts)
        raise HttpError("response without Content-Length or chunked framing")

    def peer_closed(self) -> bool:
        """Whether the server has closed this idle connection (EOF waiting to be read)."""
        try:
            readable, _, _ = select.select([self.sock.fileno()], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def close(self) -> None:
        self.sock.close()

    def abort(self) -> None:
        """Close with a reset: no TIME_WAIT left behind (ports are finite on loopback)."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
        self.sock.close()


class Poster:
    """Keep-alive POSTs on one connection (reopened when the server closes it)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.conn: Conn | None = None
        self.host_header = f"{host}:{port}".encode()

    async def post(self, path: bytes, body: bytes, seconds: float = 10.0) -> int | str:
        """The response status, or the name of what went wrong."""
        request = (
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path, self.host_header, len(body), body)
        )
        with trio.move_on_after(seconds):
            try:
                conn = self.conn
                if conn is not None and now() - conn.last_used > 0.5 and conn.peer_closed():
                    conn.close()
                    conn = self.conn = None
                if conn is None:
                    conn = self.conn = await Conn.open(self.host, self.port)
                await conn.send_all(request)
                status, headers = await conn.read_head()
                await conn.read_body(headers)
                conn.last_used = now()
                if headers.get(b"connection", b"").lower() == b"close":
                    self.drop()
                return status
            except (OSError, HttpError) as exc:
                self.drop()
                return "reset" if isinstance(exc, HttpError) else type(exc).__name__
        self.drop()
        return "timeout"

    def drop(self) -> None:
        if self.conn is not None:
            self.conn.abort()
            self.conn = None


async def get_once(host: str, port: int, path: str) -> tuple[int, bytes]:
    """One GET on a fresh connection: status and body (10 s at most)."""
    with trio.fail_after(10):
        conn = await Conn.open(host, port)
        try:
            await conn.send_all(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
            status, headers = await conn.read_head()
            return status, await conn.read_body(headers)
        finally:
            conn.abort()


# --- measurements ---------------------------------------------------------------------


@dataclass
class Window:
    """The measured interval; samples outside it are ignored."""

    start: float = math.inf
    end: float = math.inf

    def __contains__(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass
class Stats:
    statuses: Counter[str] = field(default_factory=Counter)
    delivered: int = 0  # signal events that arrived inside the window
    latencies: list[float] = field(default_factory=list)  # ms, POSTs started in the window
    lags: list[float] = field(default_factory=list)  # ms a scheduled POST started late
    heartbeats: int = 0
    stream_errors: Counter[str] = field(default_factory=Counter)
    window: Window = field(default_factory=Window)


def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"n": len(ordered), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0)}


class CpuMeter:
    """CPU seconds of this process, or of another one from /proc/<pid>/stat."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid
        self.t0 = now()
        self.c0 = self.cpu()

    def cpu(self) -> float:
        if self.pid is None:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            return usage.ru_utime + usage.ru_stime
        return proc_cpu(self.pid)

    def percent(self) -> float:
        return round(100 * (self.cpu() - self.c0) / max(now() - self.t0, 1e-9), 1)


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


# --- peers and their streams ----------------------------------------------------------


class Peer:
    """One session: its room, credentials and the SSE stream that receives its signals."""

    __slots__ = (
        "back",
        "conn",
        "connected_at",
        "ended",
        "index",
        "room",
        "scope",
        "session_id",
        "token",
    )

    def __init__(self, room: str, index: int) -> None:
        self.room = room
        self.index = index
        self.session_id: str | None = None
        self.token: str | None = None
        self.conn: Conn | None = None
        self.connected_at = 0.0
        self.back = trio.Event()  # the session event arrived on the current stream
        self.ended = trio.Event()  # the current stream ended
        self.scope = trio.CancelScope()

    def drop(self) -> None:
        """End the current stream (its task aborts the connection)."""
        self.scope.cancel()


class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        parts = urlsplit(args.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.host_header = f"{self.host}:{self.port}".encode()
        self.protocol = PROTOCOLS[args.protocol]
        self.args = args
        self.stats = Stats()
        self.on_signal: Callable[[Peer, float, float], None] | None = None

    # -- streams ---------------------------------------------------------------------
    def start_stream(
        self, nursery: trio.Nursery, peer: Peer, *, drop_after_session: bool = False
    ) -> None:
        """Start ``stream(peer)`` in ``nursery``, with fresh ``back`` and ``ended`` events."""
        peer.back = trio.Event()
        peer.ended = trio.Event()
        peer.scope = trio.CancelScope()
        nursery.start_soon(lambda: self.stream(peer, drop_after_session=drop_after_session))

    async def stream(self, peer: Peer, *, drop_after_session: bool = False) -> None:
        """Open ``peer``'s stream and read it until it ends; sets ``peer.back`` when the
        session event arrives (with ``drop_after_session``: abort the connection then).
        Use ``start_stream``."""
        stats = self.stats
        conn: Conn | None = None
        try:
            with peer.scope:
                await self._read_stream(peer, drop_after_session)
        except (OSError, trio.ClosedResourceError) as exc:
            stats.stream_errors[type(exc).__name__] += 1
        except HttpError:
            stats.stream_errors["reset"] += 1
        finally:
            conn = peer.conn
            if conn is not None:
                conn.abort()
            peer.conn = None
            peer.ended.set()

    async def _read_stream(self, peer: Peer, drop_after_session: bool) -> None:
        stats = self.stats
        conn = peer.conn = await Conn.open(self.host, self.port)
        path = self.protocol.connect_path(peer.room, peer.session_id, peer.token)
        await conn.send_all(
            b"GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n"
            % (path, self.host_header)
        )
        status, headers = await conn.read_head()
        if status != 200:
            stats.stream_errors[str(status)] += 1
            return
        chunked = headers.get(b"transfer-encoding", b"").lower() == b"chunked"
        raw = conn.buf
        conn.buf = b""
        text = b""
        recv = conn.sock.recv
        while True:
            if chunked:
                data, raw, eof = dechunk(raw)
            else:
                data, raw, eof = raw, b"", False
            if data:
                text += data
                if b"\n\n" in text:
                    *events, text = text.split(b"\n\n")
                    for block in events:
                        if self.event(peer, block, drop_after_session):
                            return
            if eof:
                return
            more = await recv(RECV)
            if not more:
                return
            raw += more

    def event(self, peer: Peer, block: bytes, drop_after_session: bool) -> bool:
        """Handle one SSE event; True to stop reading the stream."""
        kind = b"message"
        data = b""
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                data = line[5:].lstrip(b" ")
            elif line.startswith(b"event:"):
                kind = line[6:].strip()
        if kind == b"signal":
            arrived = now()
            sent = loads(data)["signal"]["t"] / 1e9
            stats = self.stats
            if arrived in stats.window:
                stats.delivered += 1
            if sent in stats.window:
                stats.latencies.append((arrived - sent) * 1000)
            if self.on_signal is not None:
                self.on_signal(peer, sent, arrived)
        elif kind == b"heartbeat":
            self.stats.heartbeats += 1
        elif kind == b"session":
            peer.session_id, peer.token = self.protocol.credentials(loads(data))
            peer.connected_at = now()
            peer.back.set()
            return drop_after_session
        elif kind == b"bye":
            return True
        return False

    async def open_peers(
        self,
        nursery: trio.Nursery,
        peers: Sequence[Peer],
        concurrency: int,
        *,
        drop_after_session: bool = False,
        seconds: float = 600.0,
    ) -> float:
        """Open every peer's stream, ``concurrency`` at a time, each until its session
        event; the seconds it took. Failed opens are counted in ``stream_errors``."""
        pending = iter(peers)
        started = now()

        async def opener() -> None:
            for peer in pending:
                self.start_stream(nursery, peer, drop_after_session=drop_after_session)
                await wait_any(peer.back.wait, peer.ended.wait)

        with trio.move_on_after(seconds):
            async with trio.open_nursery() as openers:
                for _ in range(concurrency):
                    openers.start_soon(opener)
        return now() - started

    def make_peers(self, rooms: int, peers: int, prefix: str) -> list[list[Peer]]:
        tag = f"{prefix}{os.getpid()}x{random.randrange(1 << 30):x}"
        return [[Peer(f"{tag}-{r}", i) for i in range(peers)] for r in range(rooms)]

    def signal_jobs(self, rooms: list[list[Peer]]) -> list[tuple[bytes, bytes]]:
        """(path, body prefix) for each peer to the next one in its room."""
        jobs = []
        for room in rooms:
            live = [p for p in room if p.back.is_set()]
            for i, peer in enumerate(live):
                to = live[(i + 1) % len(live)]
                assert peer.session_id is not None and to.session_id is not None
                prefix = (
                    self.protocol.batch_prefix(peer.session_id, peer.token, to.session_id)
                    if self.args.batch > 1
                    else self.protocol.signal_prefix(peer.session_id, peer.token, to.session_id)
                )
                jobs.append((f"/api/signal?room={peer.room}".encode(), prefix))
        return jobs

    async def send_signal(self, poster: Poster, job: tuple[bytes, bytes]) -> None:
        path, prefix = job
        stamp = b"%d}" % time.perf_counter_ns()
        if self.args.batch > 1:  # prefix: '{...,"signals":[{"to":..,"signal":{"t":'
            item = b"}," + prefix.partition(b'"signals":[')[2] + stamp
            body = prefix + stamp + item * (self.args.batch - 1) + b"}]}"
            status = await poster.post(path, body)
        else:
            status = await poster.post(path, prefix + stamp + b"}")
        self.stats.statuses[str(status)] += 1

    # -- modes -----------------------------------------------------------------------
    async def relay_setup(self, nursery: trio.Nursery) -> list[tuple[bytes, bytes]]:
        args = self.args
        rooms = self.make_peers(args.rooms, args.peers, "relay")
        await self.open_peers(nursery, [p for room in rooms for p in room], 32)
        jobs = self.signal_jobs(rooms)
        if not jobs:
            raise SystemExit(f"no stream could be opened: {dict(self.stats.stream_errors)}")
        return jobs

    async def throughput(self, nursery: trio.Nursery) -> dict[str, Any]:
        args = self.args
        jobs = await self.relay_setup(nursery)
        stats = self.stats
        cycle = itertools.cycle(jobs)
        t0 = now()
        stats.window = Window(t0 + args.warmup, t0 + args.warmup + args.duration)
        deadline = stats.window.end
        gen_cpu: CpuMeter | None = None
        server_cpu: CpuMeter | None = None

        async def worker() -> None:
            poster = Poster(self.host, self.port)
            for _ in range(args.max_signals):
                if now() >= deadline:
                    break
                await self.send_signal(poster, next(cycle))
            poster.drop()

        async def meters() -> None:
            nonlocal gen_cpu, server_cpu
            await sleep_until(stats.window.start)
            gen_cpu = CpuMeter()
            server_cpu = CpuMeter(args.pid) if args.pid else None

        async with trio.open_nursery() as workers:
            workers.start_soon(meters)
            for _ in range(args.concurrency):
                workers.start_soon(worker)
            await sleep_until(deadline)
            assert gen_cpu is not None
            gen_pct = gen_cpu.percent()
            server_pct = server_cpu.percent() if server_cpu else None
        await trio.sleep(0.5)  # late deliveries of the window's signals
        return {
            "mode": "throughput",
            "signals_per_s": round(stats.delivered / args.duration, 1),
            "latency_ms": percentiles(stats.latencies),
            "statuses": dict(stats.statuses),
            "stream_errors": dict(stats.stream_errors),
            "streams": sum(1 for _ in jobs),
            "concurrency": args.concurrency,
            "batch": args.batch,
            "gen_cpu_pct": gen_pct,
            "server_cpu_pct": server_pct,
        }

    async def latency(self, nursery: trio.Nursery) -> dict[str, Any]:
        jobs = await self.relay_setup(nursery)
        results = []
        for rate in self.args.rate:
            self.stats = Stats(heartbeats=self.stats.heartbeats)
            result = await self.offered(jobs, rate)
            results.append(result)
            log(
                f"rate {rate}/s: delivered {result['signals_per_s']}/s, "
                f"latency {fmt_pct(result['latency_ms'])}, statuses {result['statuses']}"
            )
        return {"mode": "latency", "rates": results}

    async def offered(self, jobs: list[tuple[bytes, bytes]], rate: float) -> dict[str, Any]:
        """One open-loop run at ``rate`` signals/s."""
        args = self.args
        stats = self.stats
        cycle = itertools.cycle(jobs)
        queue_send, queue_receive = trio.open_memory_channel[tuple[float, Any]](100_000)
        t0 = now() + 0.05
        stats.window = Window(t0 + args.warmup, t0 + args.warmup + args.duration)
        total = min(args.max_signals, int(rate * (args.warmup + args.duration)))
        gen_cpu: CpuMeter | None = None

        async def worker(receive: trio.MemoryReceiveChannel[tuple[float, Any]]) -> None:
            poster = Poster(self.host, self.port)
            async for due, job in receive:
                started = now()
                if started in stats.window:
                    stats.lags.append((started - due) * 1000)
                await self.send_signal(poster, job)
            poster.drop()

        async def schedule(send: trio.MemorySendChannel[tuple[float, Any]]) -> None:
            nonlocal gen_cpu
            async with send:
                for i in range(total):
                    due = t0 + i / rate
                    if due > now():
                        await sleep_until(due)
                    if gen_cpu is None and due >= stats.window.start:
                        gen_cpu = CpuMeter()
                    try:
                        send.send_nowait((due, next(cycle)))
                    except trio.WouldBlock:
                        stats.statuses["not_sent"] += 1
                    if now() > stats.window.end + 5:
                        break

        end_cpu: float | None = None
        with trio.move_on_after(args.warmup + args.duration + 30):
            async with trio.open_nursery() as inner:
                for _ in range(args.concurrency):
                    inner.start_soon(worker, queue_receive.clone())
                await queue_receive.aclose()
                inner.start_soon(schedule, queue_send)
                await sleep_until(stats.window.end)
                end_cpu = gen_cpu.percent() if gen_cpu is not None else None
        await trio.sleep(0.3)
        return {
            "rate": rate,
            "signals_per_s": round(stats.delivered / args.duration, 1),
            "latency_ms": percentiles(stats.latencies),
            "lag_ms": percentiles(stats.lags),
            "statuses": dict(stats.statuses),
            "gen_cpu_pct": end_cpu,
        }

    async def open_idle(self, nursery: trio.Nursery) -> tuple[list[Peer], dict[str, Any]]:
        """The capacity phase: open ``--streams`` streams; rates and memory."""
        args = self.args
        rooms = self.make_peers(math.ceil(args.streams / args.peers), args.peers, "idle")
        peers = [p for room in rooms for p in room][: args.streams]
        rss0 = proc_rss_kb(args.pid) if args.pid else None
        took = await self.open_peers(nursery, peers, args.concurrency)
        opened = sum(1 for p in peers if p.back.is_set())
        await trio.sleep(args.settle)
        rss1 = proc_rss_kb(args.pid) if args.pid else None
        result: dict[str, Any] = {
            "streams": opened,
            "open_seconds": round(took, 3),
            "streams_per_s": round(opened / took, 1),
            "stream_errors": dict(self.stats.stream_errors),
            "rss_before_kb": rss0,
            "rss_after_kb": rss1,
            "kb_per_stream": (
                round((rss1 - rss0) / opened, 2)
                if rss0 is not None and rss1 is not None and opened
                else None
            ),
        }
        if args.idle > 0 and args.pid:
            await trio.sleep(max(1.0, args.idle_after))
            heartbeats = self.stats.heartbeats
            server_cpu, gen_cpu = CpuMeter(args.pid), CpuMeter()
            await trio.sleep(args.idle)
            result["idle_seconds"] = args.idle
            result["idle_server_cpu_pct"] = server_cpu.percent()
            result["idle_gen_cpu_pct"] = gen_cpu.percent()
            result["idle_heartbeats_per_s"] = round(
                (self.stats.heartbeats - heartbeats) / args.idle, 1
            )
            result["idle_streams_alive"] = sum(1 for p in peers if not p.ended.is_set())
            result["rss_idle_end_kb"] = proc_rss_kb(args.pid)
        return peers, result

    async def capacity(self, nursery: trio.Nursery) -> dict[str, Any]:
        _, result = await self.open_idle(nursery)
        return {"mode": "capacity", **result}

    async def storm(self, nursery: trio.Nursery) -> dict[str, Any]:
        args = self.args
        peers, result = await self.open_idle(nursery)
        peers = [p for p in peers if p.back.is_set()]
        if args.wait_restart:
            print("STORM-READY", flush=True)
            with trio.move_on_after(120):
                for peer in peers:
                    await peer.ended.wait()
            line = await trio.to_thread.run_sync(sys.stdin.readline)
            if not line.startswith("GO"):
                raise SystemExit(f"expected GO on stdin, got {line!r}")
        else:
            for peer in peers:
                peer.drop()
            for peer in peers:
                await peer.ended.wait()
        self.stats.stream_errors.clear()
        go = now()
        gen_cpu = CpuMeter()
        attempts: Counter[str] = Counter()
        back_at: list[float] = []

        async def reconnect(peer: Peer) -> None:
            for attempt in itertools.count():
                if attempt >= 200 or now() - go > args.storm_timeout:
                    attempts["gave_up"] += 1
                    return
                errors = sum(self.stats.stream_errors.values())
                self.start_stream(nursery, peer)
                await wait_any(peer.back.wait, peer.ended.wait)
                if peer.back.is_set():
                    back_at.append(now() - go)
                    return
                attempts["retries"] += 1
                if sum(self.stats.stream_errors.values()) == errors:
                    self.stats.stream_errors["ended_early"] += 1
                await trio.sleep(0.1 + random.random() * 0.1)

        async with trio.open_nursery() as storm:
            for peer in peers:
                storm.start_soon(reconnect, peer)
        all_back = max(back_at) if len(back_at) == len(peers) else None
        result.update(
            {
                "mode": "storm",
                "storm_clients": len(peers),
                "storm_back": len(back_at),
                "storm_seconds": round(all_back, 3) if all_back is not None else None,
                "storm_back_s": percentiles(back_at),
                "storm_retries": attempts["retries"],
                "storm_gave_up": attempts["gave_up"],
                "storm_errors": dict(self.stats.stream_errors),
                "storm_gen_cpu_pct": gen_cpu.percent(),
            }
        )
        return result

    async def live_actors(self) -> float | None:
        status, body = await get_once(self.host, self.port, "/metrics")
        if status != 200:
            return None
        for line in body.splitlines():
            if line.startswith(b"roomkeeper_actors_live"):
                return float(line.rsplit(b" ", 1)[1])
        return None

    async def wait_hibernated(self, seconds: float) -> float:
        started = now()
        while now() - started < seconds:
            if await self.live_actors() == 0:
                return now() - started
            await trio.sleep(0.25)
        raise SystemExit(f"actors still live after {seconds} s: is --hibernate-after 1 set?")

    async def hibernation(self, nursery: trio.Nursery) -> dict[str, Any]:
        args = self.args
        if self.protocol.name != "roomkeeper":
            raise SystemExit("hibernation is a roomkeeper mode")
        if not args.pid:
            raise SystemExit("hibernation needs --pid (the server's process id)")
        await self.wait_hibernated(60)
        rss0 = proc_rss_kb(args.pid)
        peers = [p for room in self.make_peers(args.rooms, 1, "hib") for p in room]
        took = await self.open_peers(
            nursery, peers, args.concurrency, drop_after_session=True, seconds=3600
        )
        made = [p for p in peers if p.session_id is not None]
        log(f"{len(made)} rooms made in {took:.1f} s; waiting for them to hibernate")
        waited = await self.wait_hibernated(120)
        await trio.sleep(args.settle)
        rss1 = proc_rss_kb(args.pid)
        # Wake-on-signal: a sample of the rooms get their stream back, hibernate again,
        # then each gets one signal from its session to itself (then a warm second one).
        step = max(1, len(made) // args.sample)
        sample = made[::step][: args.sample]
        await self.open_peers(nursery, sample, 32)
        sample = [p for p in sample if p.back.is_set()]
        await trio.sleep(0.5)
        await self.wait_hibernated(60)
        arrivals: dict[int, trio.Event] = {}
        self.stats.window = Window(0.0, math.inf)

        def on_signal(peer: Peer, sent: float, arrived: float) -> None:
            arrivals[id(peer)].set()

        self.on_signal = on_signal
        poster = Poster(self.host, self.port)
        cold: list[float] = []
        warm: list[float] = []
        for peer in sample:
            assert peer.session_id is not None
            job = (
                f"/api/signal?room={peer.room}".encode(),
                self.protocol.signal_prefix(peer.session_id, peer.token, peer.session_id),
            )
            for series in (cold, warm):
                arrivals[id(peer)] = arrived = trio.Event()
                started = now()
                await self.send_signal(poster, job)
                with trio.move_on_after(5):
                    await arrived.wait()
                if arrived.is_set():
                    series.append((now() - started) * 1000)
            await trio.sleep(0.002)
        poster.drop()
        return {
            "mode": "hibernation",
            "rooms": len(made),
            "rooms_per_s": round(len(made) / took, 1),
            "stream_errors": dict(self.stats.stream_errors),
            "hibernate_wait_s": round(waited, 2),
            "rss_before_kb": rss0,
            "rss_after_kb": rss1,
            "bytes_per_room": round((rss1 - rss0) * 1024 / max(len(made), 1), 1),
            "wake_ms": percentiles(cold),
            "warm_ms": percentiles(warm),
            "statuses": dict(self.stats.statuses),
        }


def dechunk(raw: bytes) -> tuple[bytes, bytes, bool]:
    """The payload of the complete chunks at the start of ``raw``, the rest, and whether
    the last chunk (size 0) was among them."""
    parts: list[bytes] = []
    pos = 0
    while True:
        eol = raw.find(b"\r\n", pos)
        if eol < 0:
            break
        size = int(raw[pos:eol].split(b";")[0], 16)
        end = eol + 2 + size
        if len(raw) < end + 2:
            break
        if size == 0:
            return b"".join(parts), raw[end + 2 :], True
        parts.append(raw[eol + 2 : end])
        pos = end + 2
    return b"".join(parts), raw[pos:], False


async def sleep_until(t: float) -> None:
    """Sleep until ``now() == t`` (``now`` is ``perf_counter``, not trio's clock)."""
    await trio.sleep(max(0.0, t - now()))


async def wait_any(*waits: Callable[[], Awaitable[Any]]) -> None:
    async with trio.open_nursery() as nursery:
        for wait in waits:

            async def one(wait: Callable[[], Awaitable[Any]] = wait) -> None:
                await wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(one)


def fmt_pct(p: dict[str, Any]) -> str:
    if not p.get("n"):
        return "no samples"
    return f"p50 {p['p50']} p90 {p['p90']} p99 {p['p99']} max {p['max']} ms (n={p['n']})"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Load generator for roomkeeper's relay path and the baseline.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "mode", choices=["throughput", "latency", "capacity", "storm", "hibernation"]
    )
    parser.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8787")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="roomkeeper")
    parser.add_argument("--pid", type=int, default=0, help="server pid, for RSS and CPU")
    parser.add_argument("--rooms", type=int, default=None, help="rooms (default per mode)")
    parser.add_argument("--peers", type=int, default=None, help="peers per room")
    parser.add_argument("--concurrency", type=int, default=None, help="POSTs/opens in flight")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument(
        "--rate",
        type=lambda s: [float(r) for r in s.split(",")],
        default=[200.0],
        help="offered signals/s; a comma-separated list runs each in turn",
    )
    parser.add_argument("--max-signals", type=int, default=10_000_000, help="cap per worker")
    parser.add_argument("--streams", type=int, default=10_000, help="capacity/storm streams")
    parser.add_argument("--idle", type=float, default=0.0, help="seconds to hold them idle")
    parser.add_argument(
        "--idle-after",
        type=float,
        default=1.0,
        help="seconds between the last open and the idle measurement (rooms hibernate then)",
    )
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before RSS")
    parser.add_argument("--wait-restart", action="store_true", help="storm: GO on stdin")
    parser.add_argument("--storm-timeout", type=float, default=120.0)
    parser.add_argument("--sample", type=int, default=500, help="hibernation: rooms woken")
    parser.add_argument("--batch", type=int, default=1, help="signals per POST (roomkeeper)")
    parser.add_argument("--quick", action="store_true", help="small and short (smoke test)")
    args = parser.parse_args(argv)
    if args.batch > 1 and args.protocol != "roomkeeper":
        parser.error("--batch needs --protocol roomkeeper")
    defaults = {
        "throughput": (8, 4, 32),
        "latency": (8, 4, 32),
        "capacity": (None, 2, 64),
        "storm": (None, 2, 64),
        "hibernation": (100_000, 1, 64),
    }[args.mode]
    args.rooms = args.rooms if args.rooms is not None else defaults[0]
    args.peers = args.peers if args.peers is not None else defaults[1]
    args.concurrency = args.concurrency if args.concurrency is not None else defaults[2]
    if args.quick:
        args.duration = min(args.duration, 2.0)
        args.warmup = min(args.warmup, 0.5)
        args.streams = min(args.streams, 200)
        args.idle = min(args.idle, 2.0)
        args.settle = min(args.settle, 0.5)
        args.sample = min(args.sample, 20)
        if args.mode == "hibernation":
            args.rooms = min(args.rooms, 500)
        elif args.rooms is not None:
            args.rooms = min(args.rooms, 4)
    return args


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    generator = Generator(args)
    async with trio.open_nursery() as nursery:
        result: dict[str, Any] = await getattr(generator, args.mode)(nursery)
        nursery.cancel_scope.cancel()
    result.update(
        {
            "protocol": args.protocol,
            "rooms": result.get("rooms", args.rooms),
            "peers": args.peers,
        }
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    result = trio.run(amain, args)
    for key in ("latency_ms",):
        if key in result:
            log(f"{args.mode}: {result.get('signals_per_s')} signals/s, {fmt_pct(result[key])}")
    print("RESULT " + json.dumps(result, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
