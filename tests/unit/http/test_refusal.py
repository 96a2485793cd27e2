"""The refusal's explanation follows h11's own messages: each malformed request is fed
to h11, and what h11 raises is explained in roomkeeper's words (never h11's, which quote
the refused bytes)."""

from __future__ import annotations

import h11
import orjson
import pytest

from roomkeeper.http.guard import LastRequestConnection
from roomkeeper.http.refusal import explanation, refusal

HOST = b"Host: x\r\n"


@pytest.mark.parametrize(
    ("data", "status", "said"),
    [
        (b"GET / HTTP/1.1 x\r\n" + HOST + b"\r\n", 400, "malformed request line"),
        (b"\r\n\r\n", 400, "malformed request line"),
        (b"GET / HTTP/1.1\r\n" + HOST + b"no colon\r\n\r\n", 400, "malformed header line"),
        (b"GET / HTTP/1.1\r\n folded\r\n" + HOST + b"\r\n", 400, "malformed header line"),
        (b"GET / HTTP/1.1\r\n\r\n", 400, "no Host header"),
        (b"GET / HTTP/1.1\r\n" + HOST + HOST + b"\r\n", 400, "more than one Host header"),
        (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: x\r\n\r\n", 400, "bad Content-Length"),
        (
            b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
            "conflicting Content-Length headers",
        ),
        (
            b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n\r\n",
            501,
            "only Transfer-Encoding: chunked is supported",
        ),
        (
            b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            501,
            "only Transfer-Encoding: chunked is supported",
        ),
        (
            b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
            "malformed chunked body",
        ),
        (
            b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n1\r\naXY",
            400,
            "malformed chunked body",
        ),
        (
            b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000,
            431,
            "request line and headers over 16384 bytes",
        ),
    ],
)
def test_what_h11_refuses_is_explained(data: bytes, status: int, said: str) -> None:
    conn = LastRequestConnection(h11.SERVER, max_incomplete_event_size=16384)
    conn.receive_data(data)
    with pytest.raises(h11.RemoteProtocolError) as refused:
        while conn.next_event() is not h11.NEED_DATA:
            pass
    assert conn.refused == str(refused.value)
    assert refused.value.error_status_hint == status
    assert explanation(status, conn.refused, 16384, head_read=False) == said


def test_an_unknown_message_is_a_malformed_request() -> None:
    assert explanation(400, "something new in h11", 65536, head_read=False) == (
        "malformed HTTP request"
    )
    assert explanation(431, None, 65536, head_read=True) == (
        "a chunk line or trailers over 65536 bytes"
    )


def test_the_refusal_is_the_protocols_error_shape() -> None:
    head, body = refusal(431, "why", {"Access-Control-Allow-Origin": "*"})
    assert orjson.loads(body) == {"error": "Request Header Fields Too Large: why"}
    assert head == [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"access-control-allow-origin", b"*"),
    ]
