#!/usr/bin/env python
"""The bare quart-trio relay that roomkeeper's relay path is compared with (issue 7).

    python bench/baseline_app.py --port 0        # prints "baseline serving on URL"

Two routes and nothing else: no validation, no tokens, no rate limits, no persistence,
no CORS, no metrics. Rooms are an in-memory dict ``{room: {session_id: channel}}``.

- ``GET /api/connect?room=R``: an SSE stream; its first event is
  ``event: session`` / ``data: {"session_id": S}``, then every signal posted to S as
  ``event: signal`` / ``data: {"from": ..., "signal": ...}``, and a heartbeat event on
  every stream from one shared ticker every ``--heartbeat`` seconds (roomkeeper's default
  interval, so that the idle-stream figures compare like with like).
- ``POST /api/signal?room=R`` with ``{"sender", "to", "signal"}``: the event goes onto the
  recipient's channel; ``{"success":true}``, or 404 if there is no such recipient.

It runs on Hypercorn's trio worker with the Hypercorn settings roomkeeper uses (access log
off, ``keep_alive_max_requests`` 100,000, ``keep_alive_timeout`` 5 s, graceful timeout
5 s, listen backlog 4,096). SIGTERM/SIGINT end every stream and stop the server.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import time
import uuid
from collections.abc import AsyncGenerator

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from orjson import dumps, loads
from quart import Response, request
from quart_trio import QuartTrio

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
}
SUCCESS = {"Content-Type": "application/json"}


def create_app(heartbeat: float = 10.0) -> tuple[QuartTrio, trio.Event]:
    """The app, and the event that ends every stream (set it to shut down)."""
    app = QuartTrio(__name__)
    rooms: dict[str, dict[str, trio.MemorySendChannel[bytes]]] = {}
    closing = trio.Event()

    @app.get("/api/connect")
    async def connect() -> Response:
        room = request.args.get("room", "")
        session_id = str(uuid.uuid4())
        send, receive = trio.open_memory_channel[bytes](math.inf)
        rooms.setdefault(room, {})[session_id] = send

        async def events() -> AsyncGenerator[bytes, None]:
            try:
                yield b"event: session\ndata: " + dumps({"session_id": session_id}) + b"\n\n"
                async for frame in receive:
                    yield frame
            finally:
                peers = rooms.get(room)
                if peers is not None:
                    peers.pop(session_id, None)
                    if not peers:
                        del rooms[room]

        response = Response(events(), headers=SSE_HEADERS)
        response.timeout = None
        return response

    @app.post("/api/signal")
    async def relay() -> Response:
        body = loads(await request.get_data())
        channel = rooms.get(request.args.get("room", ""), {}).get(body["to"])
        if channel is None:
            return Response(b'{"error":"no such peer"}', status=404, headers=SUCCESS)
        data = dumps({"from": body["sender"], "signal": body["signal"]})
        channel.send_nowait(b"event: signal\ndata: " + data + b"\n\n")
        return Response(b'{"success":true}', headers=SUCCESS)

    @app.before_serving
    async def start_ticker() -> None:
        app.nursery.start_soon(ticker)

    async def ticker() -> None:
        while not closing.is_set():
            with trio.move_on_after(heartbeat):
                await closing.wait()
            frame = b'event: heartbeat\ndata: {"ts":%d}\n\n' % int(time.time() * 1000)
            for peers in list(rooms.values()):
                for channel in list(peers.values()):
                    if closing.is_set():
                        channel.close()
                    else:
                        channel.send_nowait(frame)

    return app, closing


def hypercorn_config(host: str, port: int) -> Config:
    """The same settings as roomkeeper's ``hypercorn_config`` (src/roomkeeper/server.py)."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 5.0
    config.keep_alive_max_requests = 100_000
    config.backlog = 4096
    config.keep_alive_timeout = 5.0
    return config


async def main(args: argparse.Namespace) -> None:
    app, closing = create_app(args.heartbeat)
    stop = trio.Event()

    async def on_signals() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                stop.set()
                return

    async def shutdown_trigger() -> None:
        await stop.wait()
        closing.set()  # the ticker closes every channel, so every stream ends

    async with trio.open_nursery() as nursery:
        nursery.start_soon(on_signals)
        binds = await nursery.start(
            lambda task_status: serve(
                app,
                hypercorn_config(args.host, args.port),
                shutdown_trigger=shutdown_trigger,
                task_status=task_status,
                mode="asgi",
            )
        )
        print(f"baseline serving on {binds[0]}", flush=True)
        await stop.wait()
        # serve() returns once every stream has ended (graceful_timeout at most).
        nursery.cancel_scope.deadline = trio.current_time() + 10


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8788)
    parser.add_argument("--heartbeat", type=float, default=10.0, help="seconds (default 10)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    trio.run(main, args)


if __name__ == "__main__":
    cli()
