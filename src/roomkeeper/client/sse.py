"""An incremental Server-Sent Events decoder (bytes in, events out).

Lines end at CR, LF or CRLF only, as the SSE spec says (httpx's ``aiter_lines`` also
splits at U+2028 and friends, which JSON strings may hold unescaped).
"""

from __future__ import annotations

import re

import attrs

__all__ = ["SseDecoder", "SseEvent"]

_EOL = re.compile(rb"\r\n|\r|\n")


@attrs.frozen
class SseEvent:
    id: int | None
    event: str
    data: str


class SseDecoder:
    """Feed chunks of a stream; get its complete events. ``retry`` is the last
    ``retry:`` value in milliseconds, if any."""

    def __init__(self) -> None:
        self.retry: int | None = None
        self._buffer = b""
        self._skip_lf = False
        self._reset()

    def _reset(self) -> None:
        self._id: int | None = None
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._skip_lf = False
        buffer = self._buffer + chunk
        events: list[SseEvent] = []
        start = 0
        for match in _EOL.finditer(buffer):
            event = self._line(buffer[start : match.start()].decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
            start = match.end()
        if start == len(buffer) and buffer.endswith(b"\r"):
            self._skip_lf = True  # a CR at the end of a chunk may be half of a CRLF
        self._buffer = buffer[start:]
        return events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            event = None
            if self._data:
                event = SseEvent(self._id, self._event or "message", "\n".join(self._data))
            self._reset()
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = int(value) if value.isascii() and value.isdigit() else None
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None
