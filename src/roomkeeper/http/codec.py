"""The SSE codec the runtime uses for every stream: frames, heartbeats and goodbye."""

from __future__ import annotations

from .sse import encode_event, retry_preamble

_SHUTDOWN = b'{"reason":"shutdown"}'


class SseCodec:
    """Server-Sent Events for the signaling protocol (see docs/protocol.md)."""

    def __init__(self, retry_ms: int) -> None:
        self._preamble = retry_preamble(retry_ms)

    def preamble(self) -> bytes:
        return self._preamble

    def encode(self, event_id: int, event: str, data: bytes) -> bytes:
        return encode_event(event_id, event, data)

    def heartbeat(self, now: float) -> tuple[str, bytes]:
        return "heartbeat", b'{"ts":%d}' % int(now * 1000)

    def goodbye(self) -> tuple[str, bytes]:
        return "bye", _SHUTDOWN
