"""An HTTP client for the whole application in process: requests go through the API's
layer and the Quart app behind it exactly as Hypercorn hands them over (httpx's ASGI
transport), with Quart's start-up and shutdown around them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from roomkeeper.http.app import Application


@asynccontextmanager
async def asgi_client(app: Application, *, root_path: str = "") -> AsyncIterator[httpx.AsyncClient]:
    """``root_path``: the app mounted below that path (in the request's path too)."""
    transport = httpx.ASGITransport(app, root_path=root_path, client=("127.0.0.1", 50000))
    async with (
        app.quart.test_app(),
        httpx.AsyncClient(transport=transport, base_url="http://roomkeeper.test") as client,
    ):
        yield client
