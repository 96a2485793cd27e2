"""The fast path's header lookup, in process (its answers are compared with the Quart
route's on a live system in tests/integration/test_fastpath.py)."""

from __future__ import annotations

from roomkeeper.http.fastpath import AsgiHeaders


def test_asgi_headers_are_looked_up_without_case() -> None:
    headers = AsgiHeaders([(b"content-length", b"12"), (b"x-token", b"a"), (b"x-token", b"b")])
    assert headers.get("Content-Length") == "12"
    assert headers.get("X-TOKEN") == "a"  # the first, as Werkzeug's Headers.get
    assert headers.get("Authorization") is None
