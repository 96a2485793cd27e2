"""What a lifecycle trace says: actor counts over time, wakes, and mailbox and handling
times, read from the JSON lines ``TraceWriter`` writes (any trace: simulated or served).

Definitions. *Live* actors are activated and not hibernated yet; *hibernated* ones were
activated once and are not live now (the runtime's ``snapshot`` counts the same). A
*wake* is an activation of an actor that had hibernated, by ``cause``. A *room-hour*
is an hour of an actor's span, from its first event to its last, summed over actors;
*live actor-hours* integrate the live count over time (what keeping rooms in memory costs).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from .ledger import percentiles

__all__ = ["CAUSES", "TraceError", "TraceStats", "format_summary", "read_trace"]

CAUSES = ("message", "alarm", "stream")
"""What wakes a hibernated actor."""


class TraceError(ValueError):
    """A trace file that cannot be read."""


def read_trace(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a trace file, one a line."""
    try:
        with Path(path).open("rb") as lines:
            for number, line in enumerate(lines, 1):
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise TraceError(f"{path}:{number}: not a JSON line ({exc})") from None
                if not isinstance(record, dict) or "t" not in record or "kind" not in record:
                    raise TraceError(f"{path}:{number}: not a trace event")
                yield record
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror or exc}") from exc


class TraceStats:
    """Folds trace records, in order, into counts, time series and distributions."""

    def __init__(self) -> None:
        self.events = 0
        self.start: float | None = None
        self.end = 0.0
        self.live: set[str] = set()
        self.first_seen: dict[str, float] = {}
        self.last_seen: dict[str, float] = {}
        self.peak_live = 0
        self.peak_live_at = 0.0
        self.peak_hibernated = 0
        self.live_seconds = 0.0  # the live count integrated over time
        self._live_since = 0.0
        self.activations = 0
        self.hibernations = 0
        self.wakes = dict.fromkeys(CAUSES, 0)
        self.handled: dict[str, int] = {}
        self.failed = 0
        self.alarms_set = 0
        self.streams_opened = 0
        self.streams_closed: dict[str, int] = {}
        # series: every change of the live count, and every wake
        self.series_t = array("d")
        self.series_live = array("l")
        self.series_hibernated = array("l")
        self.wake_t: dict[str, array[float]] = {cause: array("d") for cause in CAUSES}
        self.waits = array("d")  # seconds in the mailbox, per handled envelope
        self.tooks = array("d")  # seconds of handling and commit, per handled envelope

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]]) -> TraceStats:
        stats = cls()
        for record in records:
            stats.add(record)
        return stats

    @classmethod
    def from_file(cls, path: str | Path) -> TraceStats:
        return cls.from_records(read_trace(path))

    def add(self, record: dict[str, Any]) -> None:
        t, kind, actor = record["t"], record["kind"], record.get("actor", "")
        self.events += 1
        if self.start is None:
            self.start = t
        self.end = t
        self.last_seen[actor] = t
        if kind == "handled":
            what = record.get("what", "?")
            self.handled[what] = self.handled.get(what, 0) + 1
            if not record.get("ok", True):
                self.failed += 1
            elif what != "hibernate":
                self.waits.append(record.get("wait", 0.0))
                self.tooks.append(record.get("took", 0.0))
        elif kind == "activated":
            self.activations += 1
            cause = record.get("cause", "first")
            if cause in self.wakes:
                self.wakes[cause] += 1
                self.wake_t[cause].append(t)
            self.first_seen.setdefault(actor, t)
            self.live.add(actor)
            self._moved(t)
        elif kind == "hibernated":
            self.hibernations += 1
            self.live.discard(actor)
            self._moved(t)
        elif kind == "alarm_set":
            self.alarms_set += 1
        elif kind == "stream_opened":
            self.streams_opened += 1
        elif kind == "stream_closed":
            reason = record.get("reason", "?")
            self.streams_closed[reason] = self.streams_closed.get(reason, 0) + 1

    def _moved(self, t: float) -> None:
        if self.series_live:
            self.live_seconds += self.series_live[-1] * (t - self._live_since)
        self._live_since = t
        live = len(self.live)
        hibernated = len(self.first_seen) - live
        if live > self.peak_live:
            self.peak_live, self.peak_live_at = live, t
        self.peak_hibernated = max(self.peak_hibernated, hibernated)
        self.series_t.append(t)
        self.series_live.append(live)
        self.series_hibernated.append(hibernated)

    @property
    def room_hours(self) -> float:
        return sum(self.last_seen[a] - t for a, t in self.first_seen.items()) / 3600

    def summary(self) -> dict[str, Any]:
        hours = self.room_hours
        return {
            "events": self.events,
            "hours": round((self.end - (self.start or 0.0)) / 3600, 6),
            "actors": len(self.first_seen),
            "peak_live": self.peak_live,
            "peak_live_at_hours": round(self.peak_live_at / 3600, 6),
            "peak_hibernated": self.peak_hibernated,
            "live_actor_hours": round(self.live_seconds / 3600, 6),
            "activations": self.activations,
            "hibernations": self.hibernations,
            "wakes": dict(self.wakes),
            "room_hours": round(hours, 6),
            "wakes_per_room_hour": {
                cause: round(n / hours, 6) if hours else 0.0 for cause, n in self.wakes.items()
            },
            "handled": dict(sorted(self.handled.items())),
            "messages": self.handled.get("message", 0),
            "failed": self.failed,
            "alarms_set": self.alarms_set,
            "streams_opened": self.streams_opened,
            "streams_closed": dict(sorted(self.streams_closed.items())),
            "mailbox_wait_ms": percentiles(self.waits, 1000),
            "handling_ms": percentiles(self.tooks, 1000),
        }


# -- printing ---------------------------------------------------------------------------
def _rows(summary: dict[str, Any]) -> Iterator[tuple[str, str]]:
    run = summary.get("runtime", summary)
    workload = summary.get("workload")
    if workload is not None:
        yield "workload", f"{workload['name']} (seed {workload['seed']})"
    yield "trace events", f"{run['events']:,}"
    yield "simulated hours", f"{run['hours']:.2f}"
    yield "actors (rooms)", f"{run['actors']:,}"
    yield "peak live actors", f"{run['peak_live']:,} (at {run['peak_live_at_hours']:.2f} h)"
    yield "peak hibernated actors", f"{run['peak_hibernated']:,}"
    yield "live actor-hours", f"{run['live_actor_hours']:,.2f}"
    yield "activations", f"{run['activations']:,}"
    yield "hibernations", f"{run['hibernations']:,}"
    wakes, rate = run["wakes"], run["wakes_per_room_hour"]
    for cause in CAUSES:
        yield f"wakes by {cause}", f"{wakes[cause]:,} ({rate[cause]:.3f} per room-hour)"
    yield "room-hours", f"{run['room_hours']:,.1f}"
    yield "messages handled", f"{run['messages']:,} (failed handlings: {run['failed']})"
    for name, key in (("mailbox wait", "mailbox_wait_ms"), ("handling time", "handling_ms")):
        yield f"{name} (ms)", _pct(run[key])
    signals = summary.get("signals")
    if signals is not None:
        yield "signals sent", f"{signals['sent']:,} (accepted {signals['accepted']:,})"
        refused = ", ".join(f"{k}: {v}" for k, v in sorted(signals["refused"].items()))
        yield "signals refused", refused or "0"
        yield "signals delivered", f"{signals['delivered']:,}"
        yield "  of them on reconnect", f"{signals['redelivered']:,} (queued or replayed)"
        yield "signals lost", f"{signals['lost']:,}"
        yield "signals duplicated", f"{signals['duplicated']:,}"
        yield "undeliverable", f"{signals['undeliverable']:,} (recipient's session ended)"
        yield "signal delay (ms)", _pct(signals["delay_ms"])
        yield "  delivered on reconnect", _pct(signals["redelivered_delay_ms"])
    storage = summary.get("storage")
    if storage is not None:
        stored = storage["peak_stored_bytes"] / 2**10
        yield "storage commits", f"{storage['commits']:,} (peak stored state {stored:,.0f} KiB)"
    peers = summary.get("peers")
    if peers is not None:
        yield "peers / sessions", f"{peers['peers']:,} / {peers['sessions']:,}"
        yield "drops / resumed", f"{peers['drops']:,} / {peers['resumed']:,}"
        yield "left / vanished", f"{peers['left']:,} / {peers['vanished']:,}"
    machine = summary.get("machine")
    if machine is not None:
        memory = machine.get("peak_python_bytes")
        if memory is not None:
            yield "peak Python memory", f"{memory / 2**20:,.1f} MiB (tracemalloc)"
            live = machine["peak_live_python_bytes"] / 2**20
            yield "  live, after collection", f"{live:,.1f} MiB (sampled)"
        yield "wall time", f"{machine['wall_seconds']:.2f} s ({machine['cpu_seconds']:.2f} s CPU)"


def _pct(p: dict[str, float]) -> str:
    return f"p50 {p['p50']:.3f}  p90 {p['p90']:.3f}  p99 {p['p99']:.3f}  max {p['max']:.3f}"


def format_summary(summary: dict[str, Any]) -> str:
    """A two-column table of a run's summary (or of a trace's, ``TraceStats.summary``)."""
    rows = list(_rows(summary))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
