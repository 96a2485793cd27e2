"""A lifecycle trace as JSON lines: one ``TraceEvent`` a line, in the order they happen."""

from __future__ import annotations

from typing import IO

from ..jsonutil import dumps
from .trace import TraceEvent


class TraceWriter:
    """An observer that appends each event to a binary file as one JSON line.

    Lines are ``{"t": ..., "kind": ..., "ns": ..., "actor": ..., <fields>}``; ``t`` is
    trio's monotonic clock rounded to the microsecond, so a run under ``MockClock`` with
    the same inputs writes the same bytes.
    """

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.count = 0

    def __call__(self, event: TraceEvent) -> None:
        record = {"t": round(event.t, 6), "kind": event.kind, "ns": event.namespace}
        record["actor"] = event.actor
        for key, value in event.fields.items():
            record[key] = round(value, 6) if isinstance(value, float) else value
        self.out.write(dumps(record) + b"\n")
        self.count += 1
