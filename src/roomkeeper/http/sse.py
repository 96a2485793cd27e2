"""Server-Sent Events framing: the bytes of each event, the preamble and the headers.

Every event is `id: N`, `event: E` and one `data:` line of JSON, then a blank line. The
caller guarantees that `data` holds no CR or LF (compact JSON never does), so encoding is a
single bytes operation with no scanning of the payload.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["SSE_HEADERS", "comment", "encode_event", "retry_preamble", "sse_headers"]

SSE_HEADERS: Mapping[str, str] = MappingProxyType(
    {
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache, no-transform",
        "X-Accel-Buffering": "no",
    }
)
"""Headers of every event stream; `sse_headers` adds `Connection` where HTTP/1.1 allows it."""

_EVENT_LINES: dict[str, bytes] = {}


def _event_line(event: str) -> bytes:
    """`\\nevent: E\\ndata: ` for an event name, made once per name."""
    line = _EVENT_LINES.get(event)
    if line is None:
        if not event or "\n" in event or "\r" in event or event.startswith(":"):
            raise ValueError(f"bad SSE event name {event!r}")
        line = _EVENT_LINES[event] = b"\nevent: " + event.encode("utf-8") + b"\ndata: "
    return line


for _name in ("session", "roster", "signal", "heartbeat", "bye"):
    _event_line(_name)


def encode_event(event_id: int, event: str, data: bytes) -> bytes:
    """One complete event: `id: N\\nevent: E\\ndata: D\\n\\n` (`data` is one line of JSON)."""
    return b"id: %d%b%b\n\n" % (event_id, _event_line(event), data)


def retry_preamble(ms: int) -> bytes:
    """The `retry:` field that opens every stream: the client's reconnection delay."""
    return b"retry: %d\n\n" % ms


def comment(text: str = "") -> bytes:
    """A comment block (`: text`), which clients ignore; each line of `text` gets its colon."""
    lines = text.splitlines() or [""]
    return b"".join(b": " + line.encode("utf-8") + b"\n" for line in lines) + b"\n"


def sse_headers(http_version: str) -> dict[str, str]:
    """Headers for a stream answering `http_version` ("1.1", "2", "HTTP/1.1", ...)."""
    headers = dict(SSE_HEADERS)
    version = http_version.upper().removeprefix("HTTP/")
    if version == "1.1":
        headers["Connection"] = "keep-alive"
    return headers
