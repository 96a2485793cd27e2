"""`join` and `Peer`: one session in one room, kept alive across dropped streams."""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import anyio
import anyio.abc
import httpx

from ..groups import reraise_single
from ..jsonutil import dumps, loads
from .events import (
    Bye,
    ClientError,
    ConnectionLost,
    Event,
    IceServersUnsupported,
    Reconnected,
    RequestRejected,
    Roster,
    SignalReceived,
)
from .ice import expiry, parse_ice_servers, refresh_wait
from .inbox import EndOfEvents, Inbox
from .sse import SseDecoder, SseEvent

__all__ = ["Peer", "join"]

log = logging.getLogger("roomkeeper.client")

T = TypeVar("T")

RETRYABLE = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER = 30.0
"""A ``Retry-After`` longer than this is not waited for: the error is raised instead."""
STABLE = 5.0
"""A stream that lasted this long (seconds) counts as healthy: the next reconnection
is immediate. One that ended sooner waits first, so a flapping server is not hammered."""
LEAVE_TIMEOUT = 5.0
ICE_RETRY_WAIT = 10.0
"""After a failed refresh of the ICE servers, the next try waits at least this long."""
ENDING = frozenset({"left", "replaced"})


class Peer:
    """One session in one room; made by `join`.

    ``session_id``, ``token`` and ``last_event_id`` are what it needs to resume;
    ``roster`` is the room's sessions in join order (yours included), kept current by a
    background task whether or not you iterate. ``ice_servers`` is the RTCConfiguration
    ``iceServers`` list the server gave in its ``session`` event (empty if it gave none);
    `refresh_ice_servers` gets fresh credentials. ``max_batch`` is how many signals one
    POST may carry (`send_batch`; 0: the server takes no batches). ``async for event in
    peer`` yields
    `Roster`, `SignalReceived`, `Bye` and `Reconnected` events (heartbeats are handled
    inside) until the session ends, then raises the error that ended it, if any.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        room: str,
        *,
        session_id: str | None = None,
        token: str | None = None,
        last_event_id: int | None = None,
        retries: int = 5,
        idle_timeout: float = 30.0,
        reconnect_timeout: float = 30.0,
        max_delay: float = 5.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.room = room
        self.session_id = session_id or ""
        self.token = token or ""
        self.last_event_id = last_event_id
        self.roster: tuple[str, ...] = ()
        self.resumed = False
        self.ice_servers: list[dict[str, Any]] = []
        self.ice_servers_ttl: float | None = None
        self.max_batch = 0
        self._ice_expires: float | None = None  # anyio's clock; None: no TURN credential
        self._ice_news: anyio.Event | None = None
        self._http = http
        self._retries = retries
        self._idle_timeout = idle_timeout
        self._reconnect_timeout = reconnect_timeout
        self._max_delay = max_delay
        self._retry_delay = 1.0
        self._streams = 0
        self._left = False
        self._ended = False  # bye left/replaced: the session is gone, or lives elsewhere
        self._error: Exception | None = None
        self._events = Inbox[Event]()

    # -- the public API ------------------------------------------------------------------
    def __aiter__(self) -> Peer:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.receive()
        except EndOfEvents:
            raise StopAsyncIteration from None

    async def receive(self) -> Event:
        """The next event. After the last one: the error that ended the session, if
        any, else `EndOfEvents` (a `trio.EndOfChannel` and an `anyio.EndOfStream`)."""
        try:
            return await self._events.get()
        except EndOfEvents:
            if self._error is None:
                raise
        raise self._error

    async def send(self, to: str, signal: Mapping[str, Any], *, id: str | None = None) -> None:
        """Post ``signal`` to session ``to``. Every attempt carries the same ``id`` (a
        fresh UUID by default), so retries never deliver it twice. Retries after network
        errors and 429/502/503/504 (honouring ``Retry-After``), ``retries`` times;
        raises `RequestRejected` for other answers, `ConnectionLost` when out of tries."""
        if self._left:
            raise ClientError("this session has left the room")
        body = {
            "sender": self.session_id,
            "to": to,
            "token": self.token,
            "signal": dict(signal),
            "id": id if id is not None else str(uuid.uuid4()),
        }
        await self._retrying(lambda: self._post("signal", body), "POST /api/signal")

    async def send_batch(self, signals: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Post ``(to, signal)`` pairs in order, as few POSTs as the server allows (up to
        ``max_batch`` signals each; one POST per signal on a server without batches).
        Each signal gets a fresh id. A POST the server takes only part of is resent from
        its first signal not taken, after network errors and 429/502/503/504 as `send`
        retries; `RequestRejected` for other answers, its ``accepted`` counting the
        signals of this call that were taken before it."""
        if self._left:
            raise ClientError("this session has left the room")
        items: list[dict[str, Any]] = [
            {"to": to, "signal": dict(signal), "id": str(uuid.uuid4())} for to, signal in signals
        ]
        if self.max_batch < 2:
            for n, (to, signal) in enumerate(signals):
                try:
                    await self.send(to, signal, id=items[n]["id"])
                except RequestRejected as exc:
                    exc.accepted = n
                    raise
            return
        taken = 0
        for start in range(0, len(items), self.max_batch):
            rest = items[start : start + self.max_batch]

            async def attempt() -> None:
                nonlocal rest, taken
                body = {"sender": self.session_id, "token": self.token, "signals": rest}
                try:
                    await self._post("signal", body)
                except RequestRejected as exc:
                    done = exc.accepted or 0
                    taken, rest = taken + done, rest[done:]
                    exc.accepted = taken
                    raise
                taken += len(rest)

            await self._retrying(attempt, "POST /api/signal (batch)")

    async def leave(self) -> None:
        """End the session now: peers see it leave the roster; iteration ends after
        `Bye` ``left``. Doing it twice is harmless."""
        if self._left:
            return
        self._left = True
        body = {"sender": self.session_id, "token": self.token}
        tried = False

        async def attempt() -> None:
            nonlocal tried
            try:
                await self._post("leave", body)
            except RequestRejected as exc:
                if not (tried and exc.status == 403):  # an earlier try got through
                    raise
            finally:
                tried = True

        await self._retrying(attempt, "POST /api/leave")

    async def refresh_ice_servers(self) -> list[dict[str, Any]]:
        """Fresh ICE servers (short-lived TURN credentials) from ``POST /api/ice-servers``:
        sets and returns ``ice_servers``, and ``ice_servers_ttl`` (seconds they stay
        valid). Raises `IceServersUnsupported` if the server has no such endpoint (404:
        ``ice_servers`` keeps the session event's list), else as `send` does."""
        body = {"sender": self.session_id, "token": self.token}
        try:
            answer = await self._retrying(
                lambda: self._post("ice-servers", body), "POST /api/ice-servers"
            )
        except RequestRejected as exc:
            if exc.status == 404:
                raise IceServersUnsupported(exc.status, exc.reason) from exc
            raise
        servers, ttl = parse_ice_servers(answer), answer.get("ttl")
        if servers is None or not isinstance(ttl, int | float) or isinstance(ttl, bool):
            raise ClientError(f"POST /api/ice-servers: a malformed answer: {answer!r}")
        self.ice_servers_ttl = float(ttl)
        self._set_ice(servers, anyio.current_time() + float(ttl))
        return servers

    def _set_ice(self, servers: list[dict[str, Any]], expires: float | None) -> None:
        self.ice_servers, self._ice_expires = servers, expires
        self._wake_ice()

    def _wake_ice(self) -> None:
        if self._ice_news is not None:
            self._ice_news.set()

    async def _keep_ice_fresh(self) -> None:
        """Refresh ``ice_servers`` before their TURN credentials expire (see `expiry`),
        until the session ends or the server turns out to have no refresh endpoint."""
        while not (self._left or self._events.closed):
            news = self._ice_news = anyio.Event()
            if self._ice_expires is None:
                await news.wait()
                continue
            with anyio.move_on_after(refresh_wait(self._ice_expires - anyio.current_time())):
                await news.wait()
                continue  # new servers (or the end): wait again from there
            try:
                await self.refresh_ice_servers()
            except IceServersUnsupported:
                log.info("room %r: the server cannot refresh ICE servers", self.room)
                return
            except (ClientError, httpx.HTTPError) as exc:
                log.warning("room %r: could not refresh the ICE servers: %r", self.room, exc)
                await anyio.sleep(ICE_RETRY_WAIT)

    # -- HTTP ----------------------------------------------------------------------------
    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body``; the answer's JSON object (``{}`` if it is not one)."""
        response = await self._http.post(
            f"{self.url}/api/{path}",
            params={"room": self.room},
            content=dumps(body),
            headers={"Content-Type": "application/json"},
        )
        if response.status_code != 200:
            raise _rejected(response)
        try:
            answer = loads(response.content)
        except ValueError:
            return {}
        return answer if isinstance(answer, dict) else {}

    async def _open(self) -> httpx.Response:
        """One attempt to open the event stream, resuming the session if there is one."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.session_id:
            headers["X-Session-Id"] = self.session_id
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = str(self.last_event_id)
        request = self._http.build_request(
            "GET",
            f"{self.url}/api/connect",
            params={"room": self.room},
            headers=headers,
            timeout=httpx.Timeout(10.0, read=self._idle_timeout),
        )
        response = await self._http.send(request, stream=True)
        if response.status_code == 200:
            return response
        try:
            await response.aread()
        finally:
            await response.aclose()
        raise _rejected(response)

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], what: str) -> T:
        """``attempt()``, again after network errors and retryable statuses."""
        for n in range(self._retries + 1):
            last = n == self._retries
            try:
                return await attempt()
            except httpx.TransportError as exc:
                if last:
                    raise ConnectionLost(f"{what}: {exc!r}") from exc
                wait = _backoff(0.1, n, self._max_delay)
            except RequestRejected as exc:
                if last or exc.status not in RETRYABLE:
                    raise
                if exc.retry_after is not None and exc.retry_after > MAX_RETRY_AFTER:
                    raise
                wait = exc.retry_after or _backoff(0.1, n, self._max_delay)
            log.debug("%s: retrying in %.2f s", what, wait)
            await anyio.sleep(wait)
        raise AssertionError("unreachable")

    # -- the stream, in the background ---------------------------------------------------
    async def _run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Follow the session's stream, reconnecting after drops, until it ends. Errors
        before the first roster are raised (to `join`'s caller); later ones end iteration."""
        started = False

        def ready() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        try:
            response: httpx.Response | None = await self._retrying(self._open, "connect")
            while response is not None:
                opened = anyio.current_time()
                try:
                    reason = await self._read(response, ready)
                except httpx.TransportError as exc:
                    log.info("room %r: stream dropped (%r); reconnecting", self.room, exc)
                    reason = None
                if reason in ENDING or self._left:
                    self._ended = reason in ENDING
                    return
                stable = anyio.current_time() - opened >= STABLE
                response = await self._reopen(first_attempt=0 if stable else 1)
        except Exception as exc:
            if not started:
                raise
            log.warning("room %r: the session ended with an error: %r", self.room, exc)
            self._error = exc
        finally:
            self._events.close()
            self._wake_ice()

    async def _reopen(self, first_attempt: int) -> httpx.Response | None:
        """Reconnect, backing off, for up to ``reconnect_timeout``; None if we left."""
        deadline = anyio.current_time() + self._reconnect_timeout
        attempt, wait = first_attempt, 0.0
        while True:
            delay = _backoff(self._retry_delay, attempt - 1, self._max_delay) if attempt else 0.0
            await anyio.sleep(max(delay, wait))
            if self._left:
                return None
            attempt += 1
            try:
                return await self._open()
            except httpx.TransportError as exc:
                error: ClientError = ConnectionLost(f"reconnecting: {exc!r}")
                error.__cause__ = exc
                wait = 0.0
            except RequestRejected as exc:
                if exc.status not in RETRYABLE:
                    raise
                error, wait = exc, min(exc.retry_after or 0.0, MAX_RETRY_AFTER)
            if anyio.current_time() >= deadline:
                raise error

    async def _read(self, response: httpx.Response, ready: Callable[[], None]) -> str | None:
        """Handle one stream's events until it ends; the ``bye`` reason, if one came."""
        decoder = SseDecoder()
        try:
            async for chunk in response.aiter_bytes():
                for sse in decoder.feed(chunk):
                    reason = self._handle(sse)
                    if sse.event == "roster":
                        ready()
                    if reason is not None:
                        return reason
        finally:
            if decoder.retry is not None:
                self._retry_delay = decoder.retry / 1000
            with anyio.move_on_after(1, shield=True):
                await response.aclose()
        return None

    def _handle(self, sse: SseEvent) -> str | None:
        """Update the session from one event and queue what the user sees."""
        try:
            data = loads(sse.data.encode())
            if sse.event == "session":
                self._on_session(sse.id, data)
                return None
            if sse.id is not None:
                if self.last_event_id is not None and sse.id <= self.last_event_id:
                    return None  # seen already
                self.last_event_id = sse.id
            if sse.event == "roster":
                peers = tuple(str(peer) for peer in data["peers"])
                if peers != self.roster:
                    self.roster = peers
                    self._events.put(Roster(peers))
            elif sse.event == "signal":
                self._events.put(SignalReceived(data["from"], data["signal"], sse.id))
            elif sse.event == "bye":
                reason = str(data["reason"])
                self._events.put(Bye(reason))
                return reason
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("room %r: ignoring a malformed %r event: %r", self.room, sse.event, exc)
        return None

    def _on_session(self, event_id: int | None, data: dict[str, Any]) -> None:
        self.session_id, self.token = str(data["session_id"]), str(data["token"])
        self.resumed = bool(data["resumed"])
        batch = data.get("max_batch")
        self.max_batch = batch if isinstance(batch, int) and not isinstance(batch, bool) else 0
        if "ice_servers" in data:
            servers = parse_ice_servers(data)
            if servers is None:
                log.warning("room %r: ignoring malformed ice_servers", self.room)
            else:
                expires = expiry(servers)  # Unix time, made a time on anyio's clock
                now = anyio.current_time()
                self._set_ice(servers, None if expires is None else now + expires - time.time())
        if event_id is not None:
            if self.resumed and self.last_event_id is not None:
                self.last_event_id = max(self.last_event_id, event_id)
            else:  # a new session: a new id space
                self.last_event_id = event_id
        if self._streams:
            self._events.put(Reconnected(self.session_id, self.resumed))
        self._streams += 1

    async def _close(self, leave: bool) -> None:
        if leave and not (self._left or self._ended or self._error) and self.session_id:
            with anyio.move_on_after(LEAVE_TIMEOUT, shield=True):
                try:
                    await self.leave()
                except ClientError as exc:
                    log.info("room %r: could not leave: %r", self.room, exc)


def _backoff(base: float, attempt: int, cap: float) -> float:
    """``base * 2**attempt`` seconds, at most ``cap``, with jitter (half to all of it)."""
    return min(base * 2.0 ** max(attempt, 0), cap) * random.uniform(0.5, 1.0)


def _rejected(response: httpx.Response) -> RequestRejected:
    try:
        reason = str(response.json()["error"])
    except Exception:
        reason = response.reason_phrase or "error"
    header = response.headers.get("Retry-After", "")
    retry_after = float(header) if header.isascii() and header.isdigit() else None
    try:
        accepted = response.json().get("accepted")
    except Exception:
        accepted = None
    taken = accepted if isinstance(accepted, int) and not isinstance(accepted, bool) else None
    return RequestRejected(response.status_code, reason, retry_after, taken)


@asynccontextmanager
async def join(
    url: str,
    room: str,
    *,
    session_id: str | None = None,
    token: str | None = None,
    last_event_id: int | None = None,
    http: httpx.AsyncClient | None = None,
    leave_on_exit: bool = True,
    retries: int = 5,
    idle_timeout: float = 30.0,
    reconnect_timeout: float = 30.0,
    refresh_ice: bool = True,
) -> AsyncIterator[Peer]:
    """``async with join(server_url, "room") as peer:`` joins ``room`` as a new session,
    or resumes one (``session_id``, ``token``, and ``last_event_id`` to lose nothing).

    Returns once the ``session`` and first ``roster`` events are in. Raises
    `RequestRejected` (e.g. 400 for a bad room, 403 for a wrong token) or
    `ConnectionLost`. A stream quiet for ``idle_timeout`` seconds, dropped or ended
    (other than ``bye left/replaced``) is reopened; the client gives up after
    ``reconnect_timeout`` seconds of failures. On exit the peer leaves the room (unless
    ``leave_on_exit`` is False, e.g. to resume the session elsewhere). ``http``: your
    own ``httpx.AsyncClient`` (default: one made for this peer). With ``refresh_ice``,
    ``peer.ice_servers`` is refreshed in the background before its TURN credentials
    expire. Runs under trio or asyncio (on anyio).
    """
    async with AsyncExitStack() as stack:
        if http is None:
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=10.0))
        peer = Peer(
            http,
            url,
            room,
            session_id=session_id,
            token=token,
            last_event_id=last_event_id,
            retries=retries,
            idle_timeout=idle_timeout,
            reconnect_timeout=reconnect_timeout,
        )
        try:
            async with anyio.create_task_group() as tasks:
                await tasks.start(peer._run)
                if refresh_ice:
                    tasks.start_soon(peer._keep_ice_fresh)
                try:
                    yield peer
                finally:
                    await peer._close(leave_on_exit)
                    tasks.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The background task never raises: a group from here wraps the caller's error.
            reraise_single(group)
