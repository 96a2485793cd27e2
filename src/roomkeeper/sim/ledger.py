"""The delivery oracle: every signal a simulated peer sends, and whether it arrived.

A signal the room accepted (``Done``) for session S must reach S exactly once, unless S
ended before it could. The ledger decides "could" from S's streams: the room puts an
accepted signal on S's open stream, or queues it (and its replay history keeps what a
dropped stream had not delivered) for S's next stream. So if S processed any stream past
the moment of acceptance, the signal must have arrived; if not (S vanished, or came back
after its grace period), it is ``undeliverable``, which the protocol allows.
"""

from __future__ import annotations

import math
from array import array

__all__ = ["Ledger", "percentiles"]


class _Signal:
    __slots__ = ("abandoned", "done", "sent", "to")

    def __init__(self, to: str, sent: float) -> None:
        self.to = to
        self.sent = sent
        self.done: float | None = None
        self.abandoned = False


class Ledger:
    """Signals by number ``n`` (the peers put it in each payload), and each session's
    horizon: the latest moment up to which its streams' events were processed."""

    def __init__(self) -> None:
        self._open: dict[int, _Signal] = {}  # sent, not yet settled
        self._seen = bytearray()  # by n: 1 once received
        self._horizon: dict[str, float] = {}  # session -> its events processed up to
        self.delays = array("d")  # send -> arrival, seconds
        self.redelivered_delays = array("d")
        self.counts: dict[str, int] = dict.fromkeys(
            (
                "sent",
                "accepted",
                "retried",
                "delivered",
                "redelivered",
                "duplicated",
                "misdelivered",
                "lost",
                "undeliverable",
                "abandoned",
                "errors",
            ),
            0,
        )
        self.refusals: dict[str, int] = {}  # by HTTP status

    # -- sessions ----------------------------------------------------------------------
    def stream_ended(self, session_id: str, processed_until: float) -> None:
        """A stream of the session ended; everything the server had written to it before
        ``processed_until`` was handled by the peer."""
        before = self._horizon.get(session_id, -math.inf)
        self._horizon[session_id] = max(before, processed_until)

    # -- signals -----------------------------------------------------------------------
    def sending(self, to: str, now: float) -> int:
        """Number a new signal for ``to``; the caller puts ``n`` in its payload."""
        n = len(self._seen)
        self._seen.append(0)
        self._open[n] = _Signal(to, now)
        self.counts["sent"] += 1
        return n

    def accepted(self, n: int, now: float) -> None:
        self.counts["accepted"] += 1
        entry = self._open.get(n)
        if entry is not None:
            if self._seen[n]:
                del self._open[n]
            else:
                entry.done = now

    def refused(self, n: int, status: int) -> None:
        key = str(status)
        self.refusals[key] = self.refusals.get(key, 0) + 1
        if self._open.pop(n, None) is not None and self._seen[n]:
            self.counts["misdelivered"] += 1  # refused, yet it arrived

    def failed(self, n: int) -> None:
        """The room's handler raised (a bug: the trace has a failed ``handled``)."""
        self.counts["errors"] += 1
        self._open.pop(n, None)

    def abandoned(self, n: int) -> None:
        """The sender went away before the answer; it may still arrive (then it counts)."""
        entry = self._open.get(n)
        if entry is not None and entry.done is None and not self._seen[n]:
            self.counts["abandoned"] += 1
            entry.abandoned = True

    def received(self, n: int, session_id: str, now: float, *, redelivered: bool) -> None:
        if n >= len(self._seen):
            self.counts["misdelivered"] += 1
            return
        if self._seen[n]:
            self.counts["duplicated"] += 1
            return
        self._seen[n] = 1
        entry = self._open.get(n)
        if entry is None:  # refused or failed, and yet here
            self.counts["misdelivered"] += 1
            return
        if entry.to != session_id:
            self.counts["misdelivered"] += 1
        if entry.abandoned:  # its sender went away; it arrived all the same
            self.counts["abandoned"] -= 1
        self.counts["delivered"] += 1
        self.delays.append(now - entry.sent)
        if redelivered:
            self.counts["redelivered"] += 1
            self.redelivered_delays.append(now - entry.sent)
        if entry.done is not None or entry.abandoned:
            del self._open[n]

    def settle(self) -> None:
        """At the end of a run: every accepted signal that never arrived is ``lost``
        (its recipient processed a stream past its acceptance) or ``undeliverable``."""
        for entry in self._open.values():
            done = entry.done
            if done is None:
                continue  # never answered: abandoned (counted)
            if self._horizon.get(entry.to, -math.inf) > done:
                self.counts["lost"] += 1
            else:
                self.counts["undeliverable"] += 1
        self._open.clear()


def percentiles(values: array[float] | list[float], scale: float = 1.0) -> dict[str, float]:
    """p50, p90, p99, p99.9 and max (nearest rank), times ``scale``; zeros if empty."""
    ordered = sorted(values)
    out: dict[str, float] = {}
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)):
        out[name] = ordered[max(0, math.ceil(q * len(ordered)) - 1)] * scale if ordered else 0.0
    out["max"] = ordered[-1] * scale if ordered else 0.0
    return {k: round(v, 6) for k, v in out.items()}
