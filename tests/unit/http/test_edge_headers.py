"""The API layer's view of a request's headers, in process."""

from __future__ import annotations

from roomkeeper.http.edge import AsgiHeaders


def test_asgi_headers_are_looked_up_without_case() -> None:
    headers = AsgiHeaders([(b"content-length", b"12"), (b"x-token", b"a"), (b"x-token", b"b")])
    assert headers.get("Content-Length") == "12"
    assert headers.get("X-TOKEN") == "a"  # the first, as Werkzeug's Headers.get
    assert headers.get("Authorization") is None
    assert headers.getlist("x-Token") == ["a", "b"]
    assert headers.getlist("Via") == []
    assert headers.items()[1] == ("x-token", "a")
