"""Two guards on the connections of roomkeeper's own Hypercorn server.

- **One bad connection must never stop the server.** Hypercorn 0.18's trio worker lets an
  exception from one connection's protocol handler escape into the server's nursery,
  which ends ``serve()`` for everyone. The known case is HTTP/2 request data arriving for
  a stream already answered (a 413 decided from the header: pgjones/hypercorn#329). Such
  an error closes that connection only, and is logged.
- **A connection's last request gets its answer.** When a request is the last its
  connection may carry (HTTP/1.0, ``Connection: close``, or an answer that closes), h11
  refuses any byte after it; Hypercorn then answered bytes pipelined behind it with an
  empty ``400`` in place of the answer, or closed while the answer was being sent. Those
  bytes are now left unread until the answer is out; then the connection closes.

Hypercorn builds each connection's ``TCPServer`` and ``H11Protocol`` inside ``serve()``, so
the guards wrap their ``run`` and ``__init__``. They are installed once per process and
act only for a server whose config is a `GuardedConfig`: any other Hypercorn server in the
process (a host application's own, say) runs Hypercorn's code unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import h11
from hypercorn.config import Config
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio import tcp_server

__all__ = ["GuardedConfig", "LastRequestConnection", "install_guard"]

log = logging.getLogger("roomkeeper.http")

_ORIGINAL = "_roomkeeper_original"
_ANSWERING = (h11.SEND_RESPONSE, h11.SEND_BODY)


class GuardedConfig(Config):
    """Hypercorn's config for a server whose connections are guarded."""


class LastRequestConnection(h11.Connection):
    """h11's server connection, holding back what follows a connection's last request
    (``PAUSED``, as h11 does after a request that keeps the connection alive) while its
    answer is being sent, instead of refusing it at once."""

    def next_event(self) -> Any:
        if (
            self.their_state is h11.MUST_CLOSE
            and self.our_state in _ANSWERING
            and self.trailing_data[0]
        ):
            return h11.PAUSED
        return super().next_event()


def install_guard() -> None:
    """Wrap Hypercorn's trio ``TCPServer.run`` and ``H11Protocol.__init__`` once per
    process (idempotent)."""
    server_class: Any = tcp_server.TCPServer
    protocol_class: Any = H11Protocol
    if hasattr(server_class, _ORIGINAL):
        return
    run: Callable[[Any], Awaitable[None]] = server_class.run
    init: Callable[..., None] = protocol_class.__init__

    async def guarded_run(self: Any) -> None:
        if not isinstance(self.config, GuardedConfig):
            await run(self)
            return
        try:
            await run(self)
        except Exception:  # an ExceptionGroup of Exceptions too; Cancelled passes
            log.warning("a connection failed inside Hypercorn and was closed", exc_info=True)

    def guarded_init(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if isinstance(self.config, GuardedConfig):
            self.connection = LastRequestConnection(
                h11.SERVER, max_incomplete_event_size=self.config.h11_max_incomplete_size
            )

    setattr(server_class, _ORIGINAL, run)
    setattr(protocol_class, _ORIGINAL, init)
    server_class.run = guarded_run
    protocol_class.__init__ = guarded_init
