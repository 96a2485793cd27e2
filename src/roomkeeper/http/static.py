"""The browser client and the demo page: ``GET /``, ``/client.js`` and ``/demo.js``.

The files are package data (``roomkeeper/http/static/``), read once with importlib.resources
when the routes are installed. Answers carry a strong ``ETag`` and ``Cache-Control:
no-cache``, so browsers revalidate (a ``304`` while unchanged) and pick up a new version at
once after an upgrade. CORS headers come from the app's ``after_request`` like everywhere
else, so pages on other origins can import ``client.js``. See docs/browser-client.md.
"""

from __future__ import annotations

import hashlib
from importlib import resources

import attrs
from quart import Quart, Response, request

__all__ = ["FILES", "StaticFile", "install", "load"]

FILES: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/client.js": ("client.js", "text/javascript; charset=utf-8"),
    "/demo.js": ("demo.js", "text/javascript; charset=utf-8"),
}
"""URL path -> (file in ``roomkeeper/http/static/``, Content-Type)."""


@attrs.frozen
class StaticFile:
    body: bytes
    content_type: str
    etag: str

    def response(self, if_none_match: str | None) -> Response:
        headers = {
            "Content-Type": self.content_type,
            "Cache-Control": "no-cache",
            "ETag": self.etag,
            "X-Content-Type-Options": "nosniff",
        }
        if if_none_match is not None and _matches(if_none_match, self.etag):
            del headers["Content-Type"]
            return Response(b"", status=304, headers=headers)
        return Response(self.body, headers=headers)


def _matches(if_none_match: str, etag: str) -> bool:
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def load(name: str, content_type: str) -> StaticFile:
    """One file of ``roomkeeper/http/static/`` with its ETag."""
    body = resources.files("roomkeeper.http").joinpath("static", name).read_bytes()
    return StaticFile(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


def install(app: Quart) -> None:
    """Add ``GET`` (and ``HEAD``) routes for every file of ``FILES`` to ``app``."""
    for path, (name, content_type) in FILES.items():
        _route(app, path, load(name, content_type))


def _route(app: Quart, path: str, file: StaticFile) -> None:
    async def serve() -> Response:
        return file.response(request.headers.get("If-None-Match"))

    endpoint = "static_" + (path.strip("/").replace(".", "_") or "index")
    app.add_url_rule(path, endpoint, serve, methods=["GET"])
