"""One bad connection must never stop the server.

Hypercorn 0.18's trio worker lets an exception from one connection's protocol handler
escape into the server's nursery, which ends ``serve()`` for everyone. The known case is
HTTP/2 request data arriving for a stream already answered (a 413 decided from the
header: pgjones/hypercorn#329). ``guard_connections`` wraps each connection's task so
such an error closes that connection only, and is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from hypercorn.trio import tcp_server

log = logging.getLogger("roomkeeper.http")

_GUARDED = "_roomkeeper_guarded"


def guard_connections() -> None:
    """Patch Hypercorn's trio TCPServer.run once per process (idempotent)."""
    server_class: Any = tcp_server.TCPServer
    if getattr(server_class, _GUARDED, False):
        return
    original: Callable[[Any], Awaitable[None]] = server_class.run

    async def run(self: Any) -> None:
        try:
            await original(self)
        except Exception:  # an ExceptionGroup of Exceptions too; Cancelled passes
            log.warning("a connection failed inside Hypercorn and was closed", exc_info=True)

    server_class.run = run
    setattr(server_class, _GUARDED, True)
