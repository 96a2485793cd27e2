"""PNG plots of a lifecycle trace, with matplotlib (``pip install 'roomkeeper[plot]'``).

matplotlib is imported on first use, so the rest of the simulator works without it.
"""

from __future__ import annotations

import importlib
from array import array
from pathlib import Path
from typing import Any

from .ledger import percentiles
from .report import CAUSES, TraceStats

__all__ = ["COLORS", "PlotsUnavailable", "bin_hours", "binned", "pyplot", "write_plots"]

COLORS = {"message": "#1f77b4", "alarm": "#d62728", "stream": "#2ca02c"}
"""One color per wake cause, shared by every plot."""


class PlotsUnavailable(RuntimeError):
    """matplotlib is not installed."""


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend; ``PlotsUnavailable`` if absent."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError as exc:
        raise PlotsUnavailable("plots need matplotlib: pip install 'roomkeeper[plot]'") from exc
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def write_plots(stats: TraceStats, out: Path, stem: str) -> list[Path]:
    """Live and hibernated actors over time, wakes over time by cause, and the mailbox
    wait and handling time distributions, as ``<stem>-*.png`` in ``out``."""
    plt = pyplot()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("actors", _actors), ("wakes", _wakes), ("latency", _latency)):
        fig = draw(plt, stats)
        path = out / f"{stem}-{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _hours(stats: TraceStats, times: array[float]) -> list[float]:
    start = stats.start or 0.0
    return [(t - start) / 3600 for t in times]


def binned(
    hours: list[float], values: array[int], width: float, bins: int
) -> tuple[list[float], list[float]]:
    """The maximum and the time-weighted mean of a step function (``values[i]`` from
    ``hours[i]`` on) in each bin of ``width`` hours."""
    peak = [0.0] * bins
    area = [0.0] * bins
    for i, (start, value) in enumerate(zip(hours, values, strict=True)):
        stop = hours[i + 1] if i + 1 < len(hours) else start
        first = min(int(start / width), bins - 1)
        last = min(int(stop / width), bins - 1)
        for b in range(first, last + 1):
            peak[b] = max(peak[b], value)
            overlap = min(stop, (b + 1) * width) - max(start, b * width)
            area[b] += value * max(0.0, overlap)
    return peak, [a / width for a in area]


def _actors(plt: Any, stats: TraceStats) -> Any:
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 5.5))
    hours = _hours(stats, stats.series_t)
    span = hours[-1] if hours else 0.0
    width = bin_hours(span)
    bins = int(span / width) + 1
    mids = [(i + 0.5) * width for i in range(bins)]
    minutes = round(width * 60)
    peak, mean = binned(hours, stats.series_live, width, bins)
    top.plot(mids, peak, color="#ff7f0e", linewidth=1.2, label=f"max in {minutes} min")
    top.plot(mids, mean, color="#8c564b", linewidth=1.2, label="time-weighted mean")
    top.set_ylabel("live actors")
    top.set_title(f"Actors over time (peak live {stats.peak_live:,})")
    top.legend(loc="upper right")
    bottom.step(hours, stats.series_hibernated, where="post", color="#7f7f7f", linewidth=1.2)
    bottom.set_ylabel("hibernated actors")
    bottom.set_xlabel("simulated hours")
    for axes in (top, bottom):
        axes.grid(alpha=0.3)
        axes.set_ylim(bottom=0)
    fig.tight_layout()
    return fig


def bin_hours(span_hours: float) -> float:
    """A readable bin width (hours) giving roughly 100 bins over ``span_hours``."""
    for width in (1 / 60, 5 / 60, 10 / 60, 0.25, 0.5, 1.0, 2.0, 6.0):
        if span_hours / width <= 150:
            return width
    return 24.0


def _wakes(plt: Any, stats: TraceStats) -> Any:
    fig, axes = plt.subplots(figsize=(9, 4))
    span = (stats.end - (stats.start or 0.0)) / 3600
    width = bin_hours(span)
    bins = int(span / width) + 1
    lefts = [i * width for i in range(bins)]
    below = [0] * bins
    for cause in CAUSES:
        counts = [0] * bins
        for hour in _hours(stats, stats.wake_t[cause]):
            counts[int(hour / width)] += 1
        axes.bar(
            lefts, counts, width=width, bottom=below, align="edge", label=cause, color=COLORS[cause]
        )
        below = [b + c for b, c in zip(below, counts, strict=True)]
    minutes = round(width * 60)
    axes.set_title(f"Wakes from hibernation by cause, per {minutes} min")
    axes.set_xlabel("simulated hours")
    axes.set_ylabel("wakes")
    axes.legend()
    axes.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def _latency(plt: Any, stats: TraceStats) -> Any:
    """Complementary CDFs (the share of envelopes above x), which show a tail even when
    almost every value is 0 (no storage latency, no queue)."""
    fig, panels = plt.subplots(1, 2, figsize=(10, 4))
    series = (("mailbox wait", stats.waits), ("handling time", stats.tooks))
    for axes, (name, values) in zip(panels, series, strict=True):
        ms = sorted(v * 1000 for v in values)
        count = len(ms)
        xs = [0.0, *ms]
        above = [1.0, *[(count - i - 1) / count for i in range(count)]] if count else [1.0]
        axes.step(xs, above, where="post", color="#1f77b4")
        axes.set_yscale("log")
        axes.set_ylim(bottom=max(0.5 / count, 1e-7) if count else 1e-3, top=1.5)
        p = percentiles(values, 1000)
        axes.set_title(f"{name}: p50 {p['p50']:.3g}  p99 {p['p99']:.3g}  max {p['max']:.3g} ms")
        axes.set_xlabel(f"{name} (ms)")
        axes.set_ylabel("share of envelopes above")
        axes.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig
