"""The SSE codec the runtime uses for every stream: frames, heartbeats and goodbye."""

from __future__ import annotations

from .sse import encode_event, retry_preamble

_SHUTDOWN = b'{"reason":"shutdown"}'
# Characters some clients take for line ends (Python's splitlines, httpx's line reader);
# in JSON they can only stand inside strings, where their escapes mean the same.
_ESCAPES = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"), (b"\xc2\x85", b"\\u0085"))


class SseCodec:
    """Server-Sent Events for the signaling protocol (see docs/protocol.md)."""

    def __init__(self, retry_ms: int) -> None:
        self._preamble = retry_preamble(retry_ms)

    def preamble(self) -> bytes:
        return self._preamble

    def encode(self, event_id: int, event: str, data: bytes) -> bytes:
        if b"\xe2\x80" in data or b"\xc2\x85" in data:
            for raw, escaped in _ESCAPES:
                data = data.replace(raw, escaped)
        return encode_event(event_id, event, data)

    def heartbeat(self, now: float) -> tuple[str, bytes]:
        return "heartbeat", b'{"ts":%d}' % int(now * 1000)

    def goodbye(self) -> tuple[str, bytes]:
        return "bye", _SHUTDOWN
