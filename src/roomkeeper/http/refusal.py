"""The answer to an HTTP/1.1 request h11 refuses before any route sees it (a malformed
request line or header, a head too large, a bad ``Content-Length``...), in the protocol's
error shape: ``{"error": "<reason phrase>: <explanation>"}``.

The explanation is roomkeeper's own, chosen by the start of h11's message: h11's message
may quote the refused bytes (a query string with a token, say), which are never echoed.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

import orjson

__all__ = ["explanation", "refusal"]

# The start of an h11 message (lower case) -> what the answer says.
_EXPLAINED = (
    ("illegal request line", "malformed request line"),
    ("no request line", "malformed request line"),
    ("illegal header line", "malformed header line"),
    ("continuation line", "malformed header line"),
    ("missing mandatory host", "no Host header"),
    ("found multiple host", "more than one Host header"),
    ("bad content-length", "bad Content-Length"),
    ("conflicting content-length", "conflicting Content-Length headers"),
    ("illegal chunk header", "malformed chunked body"),
    ("malformed chunk footer", "malformed chunked body"),
    ("only transfer-encoding: chunked", "only Transfer-Encoding: chunked is supported"),
    ("multiple transfer-encoding", "only Transfer-Encoding: chunked is supported"),
)


def explanation(status: int, message: str | None, head_limit: int, head_read: bool) -> str:
    """Why a request was refused, from h11's ``message``: ``head_limit`` is the largest
    incomplete request head h11 holds; ``head_read`` whether the request's head had been
    read whole (then a ``431`` is about a chunk line or trailers of its body)."""
    if status == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE:
        what = "a chunk line or trailers" if head_read else "request line and headers"
        return f"{what} over {head_limit} bytes"
    lowered = (message or "").lower()
    for start, said in _EXPLAINED:
        if lowered.startswith(start):
            return said
    return "malformed HTTP request"


def refusal(
    status: int, explanation: str, headers: Mapping[str, str]
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers and body of a refusal; ``headers`` are added (CORS, a request id).
    The connection is always closed after it: what follows a refused request cannot be
    told apart from it."""
    body = orjson.dumps({"error": f"{HTTPStatus(status).phrase}: {explanation}"})
    head = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"connection", b"close"),
        *(
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in headers.items()
        ),
    ]
    return head, body
