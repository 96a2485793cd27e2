#!/usr/bin/env python
"""How ``hibernate_after`` trades memory for wake-ups, on the realistic call workload.

    python bench/hibernation_study.py            # docs/workloads/calls.toml, 3 settings
    python bench/hibernation_study.py --quick    # 100 rooms: a smoke test (~1 minute)

For each ``hibernate_after`` (default 1, 10 and 60 s) it runs ``roomkeeper simulate`` with
the same workload and seed in a fresh interpreter (so each run's peak Python memory, by
tracemalloc, is its own). Then it measures what one live room costs: 200 calls of 2 (and
of 5) peers start together; the heap after garbage collection while all rooms are live
(their offers, answers and ICE candidates exchanged) minus the heap once they have
hibernated, the calls still connected, divided by the rooms. It prints two Markdown
tables and writes, under ``--out`` (default docs/img/):

- ``hibernation-tradeoff.png``: live actors, peak Python memory and wakes per room-hour;
- ``hibernation-live-actors.png``: live actors over the simulated day, per setting;
- ``calls-<S>s-{actors,wakes,latency}.png``: ``trace-report``'s plots of the middle setting;
- ``hibernation-study.json``: the numbers in the table, with the machine and command.

Traces go to ``--work`` (default: a temporary folder, removed afterwards); with the same
seed they are the same bytes on every machine, so only the wall and memory figures vary.
Needs matplotlib (``pip install -e '.[plot]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from roomkeeper.sim import TraceStats
from roomkeeper.sim.plots import COLORS, bin_hours, binned, pyplot, write_plots
from roomkeeper.sim.report import CAUSES

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", type=Path, default=ROOT / "docs/workloads/calls.toml")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--settings", default="1,10,60", help="hibernate_after values, s")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/img")
    parser.add_argument("--work", type=Path, help="keep the traces and summaries here")
    parser.add_argument("--quick", action="store_true", help="100 rooms, for a smoke test")
    return parser.parse_args()


def simulate(args: argparse.Namespace, hibernate: float, work: Path) -> dict[str, Any]:
    """One ``roomkeeper simulate`` in a fresh interpreter; its summary, with peak RSS."""
    stem = f"{Path(args.workload).stem}-{hibernate:g}s"
    trace, summary = work / f"{stem}.jsonl", work / f"{stem}.json"
    command = [sys.executable, "-m", "roomkeeper", "simulate", str(args.workload)]
    command += ["--seed", str(args.seed), "--trace", str(trace), "--summary", str(summary)]
    command += ["--set", f"runtime.hibernate_after={hibernate:g}"]
    if args.quick:
        command += ["--set", "rooms=100"]
    print(f"$ {shlex.join(command)}", file=sys.stderr, flush=True)
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.exit(f"the run for hibernate_after={hibernate:g} failed ({child.returncode})")
    result: dict[str, Any] = json.loads(summary.read_text())
    result["machine"]["peak_rss_bytes"] = usage.ru_maxrss * 1024  # Linux: KiB
    result["trace_stats"] = TraceStats.from_file(trace)
    return result


COST_SETTINGS = (
    "rooms=200",
    "hours=0.002",  # every call starts within 7 s
    "arrival.profile=[]",
    "room.join_spread=1",
    "session.length=300",
    "drop.probability=0",
    "session.renegotiate_per_hour=0",
    "session.leave_probability=1",
    "runtime.hibernate_after=30",
)


def room_cost(args: argparse.Namespace, size: int, work: Path) -> dict[str, Any]:
    """The heap a live room holds beyond a hibernated one, for rooms of ``size`` peers."""
    summary = work / f"cost-{size}.json"
    command = [sys.executable, "-m", "roomkeeper", "simulate", str(args.workload)]
    command += ["--seed", str(args.seed), "--trace", str(work / f"cost-{size}.jsonl")]
    command += ["--summary", str(summary), "--memory-every", "10"]
    for setting in (*COST_SETTINGS, f"room.size={size}"):
        command += ["--set", setting]
    print(f"$ {shlex.join(command)}", file=sys.stderr, flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    result = json.loads(summary.read_text())
    samples = result["machine"]["live_memory_samples"]
    # the last sample with every room live, then the first with (nearly) none live
    most = max(live for _, live, _ in samples)
    first = next(i for i, sample in enumerate(samples) if sample[1] == most)
    rested = next(i for i in range(first, len(samples)) if samples[i][1] <= 1)
    t_live, live, live_bytes = samples[
        max(i for i in range(first, rested) if samples[i][1] == most)
    ]
    t_rest, rest, rest_bytes = samples[rested]
    rooms = result["peers"]["rooms"]
    return {
        "peers_per_room": size,
        "rooms": rooms,
        "signals_per_room": round(result["signals"]["accepted"] / rooms, 1),
        "heap_all_live_mib": round(live_bytes / 2**20, 2),
        "heap_hibernated_mib": round(rest_bytes / 2**20, 2),
        "sampled_at_s": [t_live, t_rest],
        "live_room_kib": round((live_bytes - rest_bytes) / (live - rest) / 2**10, 1),
        "stored_room_kib": round(result["storage"]["peak_stored_bytes"] / rooms / 2**10, 1),
    }


def cost_markdown(costs: list[dict[str, Any]]) -> str:
    lines = [
        "| peers per room | signals per room | heap, all rooms live | heap, hibernated "
        "| a live room costs | a hibernated room stores |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for c in costs:
        lines.append(
            f"| {c['peers_per_room']} | {c['signals_per_room']:.0f} "
            f"| {c['heap_all_live_mib']:.1f} MiB | {c['heap_hibernated_mib']:.1f} MiB "
            f"| **{c['live_room_kib']:.0f} KiB** | {c['stored_room_kib']:.0f} KiB |"
        )
    return "\n".join(lines)


def row(hibernate: float, result: dict[str, Any]) -> dict[str, Any]:
    run, signals, machine = result["runtime"], result["signals"], result["machine"]
    per_hour = run["wakes_per_room_hour"]
    return {
        "hibernate_after_s": hibernate,
        "peak_live": run["peak_live"],
        "mean_live": round(run["live_actor_hours"] / run["hours"], 2),
        "peak_python_mib": round(machine["peak_python_bytes"] / 2**20, 1),
        "peak_live_python_mib": round(machine["peak_live_python_bytes"] / 2**20, 1),
        "peak_rss_mib": round(machine["peak_rss_bytes"] / 2**20, 1),
        "peak_stored_kib": round(result["storage"]["peak_stored_bytes"] / 2**10),
        "activations": run["activations"],
        "commits": result["storage"]["commits"],
        "wakes_per_room_hour": per_hour,
        "wakes_per_room_hour_total": round(sum(per_hour.values()), 2),
        "mailbox_wait_p99_ms": run["mailbox_wait_ms"]["p99"],
        "signals_accepted": signals["accepted"],
        "signals_lost": signals["lost"],
        "signals_duplicated": signals["duplicated"],
        "wall_s": machine["wall_seconds"],
        "cpu_s": machine["cpu_seconds"],
        "trace_sha256": result["trace"]["sha256"],
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| hibernate_after | peak live actors | mean live actors | peak Python memory "
        "(tracemalloc) | live Python memory after GC (peak) | peak stored state "
        "| wakes / room-hour: all (message + alarm + stream) | activations | commits "
        "| mailbox wait p99 | signals lost / dup | CPU (wall) |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        w = r["wakes_per_room_hour"]
        wakes = f"**{r['wakes_per_room_hour_total']:.2f}** ({w['message']:.2f} + "
        wakes += f"{w['alarm']:.2f} + {w['stream']:.2f})"
        lines.append(
            f"| {r['hibernate_after_s']:g} s | {r['peak_live']} | {r['mean_live']:.2f} "
            f"| {r['peak_python_mib']:.1f} MiB | {r['peak_live_python_mib']:.1f} MiB "
            f"| {r['peak_stored_kib']:,} KiB | {wakes} | {r['activations']:,} "
            f"| {r['commits']:,} "
            f"| {r['mailbox_wait_p99_ms']:.2f} ms | {r['signals_lost']} / "
            f"{r['signals_duplicated']} | {r['cpu_s']:.0f} s ({r['wall_s']:.0f} s) |"
        )
    return "\n".join(lines)


def plot_tradeoff(plt: Any, rows: list[dict[str, Any]], path: Path) -> None:
    labels = [f"{r['hibernate_after_s']:g} s" for r in rows]
    xs = list(range(len(rows)))
    fig, (live, memory, wakes) = plt.subplots(1, 3, figsize=(12, 4))
    width = 0.38
    live.bar([x - width / 2 for x in xs], [r["peak_live"] for r in rows], width, label="peak")
    live.bar([x + width / 2 for x in xs], [r["mean_live"] for r in rows], width, label="mean")
    live.set_title("Live actors (rooms in memory)")
    live.legend()
    for offset, key, label, color in (
        (-width / 2, "peak_python_mib", "peak (tracemalloc)", "#9467bd"),
        (width / 2, "peak_live_python_mib", "live, after GC", "#c5b0d5"),
    ):
        values = [r[key] for r in rows]
        memory.bar([x + offset for x in xs], values, width, label=label, color=color)
    memory.set_title("Python memory (MiB)")
    memory.legend()
    below = [0.0] * len(rows)
    for cause in CAUSES:
        values = [r["wakes_per_room_hour"][cause] for r in rows]
        wakes.bar(xs, values, 0.6, bottom=below, label=cause, color=COLORS[cause])
        below = [b + v for b, v in zip(below, values, strict=True)]
    wakes.set_title("Wakes per room-hour, by cause")
    wakes.legend()
    for axes in (live, memory, wakes):
        axes.set_xticks(xs, labels)
        axes.set_xlabel("hibernate_after")
        axes.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_live(plt: Any, runs: list[tuple[float, TraceStats]], path: Path) -> None:
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 5.5))
    for hibernate, stats in runs:
        start = stats.start or 0.0
        hours = [(t - start) / 3600 for t in stats.series_t]
        width = bin_hours(hours[-1])
        bins = int(hours[-1] / width) + 1
        mids = [(i + 0.5) * width for i in range(bins)]
        peak, mean = binned(hours, stats.series_live, width, bins)
        label = f"hibernate_after {hibernate:g} s"
        top.plot(mids, peak, linewidth=1.2, label=label)
        bottom.plot(mids, mean, linewidth=1.2, label=label)
        minutes = round(width * 60)
    top.set_title(f"Live actors over the simulated day (per {minutes} min)")
    top.set_ylabel("max live")
    bottom.set_ylabel("time-weighted mean live")
    bottom.set_xlabel("simulated hours")
    for axes in (top, bottom):
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left")
        axes.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    plt = pyplot()
    settings = [float(s) for s in args.settings.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        results = [(h, simulate(args, h, work)) for h in settings]
        costs = [room_cost(args, size, work) for size in (2, 5)]
    rows = [row(h, r) for h, r in results]
    print(markdown(rows))
    print()
    print(cost_markdown(costs))
    plot_tradeoff(plt, rows, args.out / "hibernation-tradeoff.png")
    traces = [(h, r["trace_stats"]) for h, r in results]
    plot_live(plt, traces, args.out / "hibernation-live-actors.png")
    middle, example = results[len(results) // 2]
    write_plots(example["trace_stats"], args.out, f"{Path(args.workload).stem}-{middle:g}s")
    record = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "workload": str(Path(args.workload).resolve().relative_to(ROOT)),
        "seed": args.seed,
        "quick": args.quick,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "trio": results[0][1]["machine"]["trio"],
        },
        "rows": rows,
        "room_cost": costs,
    }
    (args.out / "hibernation-study.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote the plots and hibernation-study.json in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
