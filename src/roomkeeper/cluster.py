"""A node of a cluster: several roomkeeper processes on one PostgreSQL (docs/scaling.md).

Its identity (a name for people, an owner id for leases that changes with every start),
the address other nodes reach it at, and the ``X-Roomkeeper-Node`` header on every answer.
"""

from __future__ import annotations

import secrets
import socket

import attrs
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)

from .config import Config, ConfigError
from .http.forward import NODE_HEADER

__all__ = ["NodeHeader", "NodeIdentity", "node_identity"]

_WILDCARDS = ("0.0.0.0", "::", "")


@attrs.frozen
class NodeIdentity:
    """``name`` shows in ``X-Roomkeeper-Node``, logs and metrics; ``owner`` is what the
    node's leases are held by: the name and a random boot id, so a restarted node never
    mistakes its previous life's leases for its own (it waits for them to expire)."""

    name: str
    owner: str
    advertise: str  # "" until the listening port is known (port 0)


def node_identity(config: Config) -> NodeIdentity:
    name = config.node_id or f"{socket.gethostname()}:{config.port}"
    if config.advertise:
        advertise = config.advertise
    elif config.host in _WILDCARDS:
        raise ConfigError(
            f"--advertise: needed with --host {config.host!r}: the URL other nodes "
            "reach this one at, such as http://10.0.0.7:8787"
        )
    elif config.port == 0:
        advertise = ""  # known once bound
    else:
        host = f"[{config.host}]" if ":" in config.host else config.host
        advertise = f"http://{host}:{config.port}"
    return NodeIdentity(name, f"{name}/{secrets.token_hex(4)}", advertise)


class NodeHeader:
    """ASGI middleware: ``X-Roomkeeper-Node: NAME`` on every answer."""

    def __init__(self, app: ASGIFramework, name: str) -> None:
        self.app = app
        self.header = (NODE_HEADER.lower().encode(), name.encode())

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_node(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                name = self.header[0]
                if not any(k.lower() == name for k, _ in headers):  # a relayed answer's stays
                    headers.append(self.header)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_node)
