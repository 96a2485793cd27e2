#!/usr/bin/env python
"""The relay-path benchmark of issue 7: roomkeeper against a bare quart-trio relay.

    python bench/relay_bench.py                 # full: 3 rounds + hibernation, ~25 minutes
    python bench/relay_bench.py --quick         # a smoke run, about a minute
    python bench/relay_bench.py --profile DIR   # also py-spy both servers at full load
    python bench/relay_bench.py --report FILE   # the tables and plot of a --save file

Each server runs pinned to core 0 (``taskset -c 0``) and the load generator
(bench/loadgen.py) to core 1. Rounds alternate which server goes first; the table gives
the median over rounds of each figure, and roomkeeper/baseline. Per round and server:

1. throughput: a closed loop of 32 POSTs in flight over 8 rooms of 4 peers: delivered
   signals/s, and the server's CPU time per signal (less sensitive to a noisy machine);
2. latency at fixed offered rates on the same running servers: 200/s, 50 % of
   roomkeeper's max of this round, and a sweep for the plot (docs/img/latency-vs-load.png);
3. a fresh server: 10,000 idle streams (rooms of 2): streams opened/s and RSS per stream;
   held 30 s idle: server CPU % from heartbeats; then the server is restarted on the same
   port (SIGTERM, start again) and all 10,000 clients reconnect at once: seconds until
   every one has its ``session`` event back.

Then, roomkeeper only (``--hibernation-rounds``, default 1): 100,000 rooms of one session
on a server with ``--hibernate-after 1 --grace 3600`` and its default SQLite storage:
RSS per hibernated room and wake-on-signal latency (500 rooms, each woken by one signal).

roomkeeper runs with its rate limits lifted (``--rate-*``, ``--new-sessions-*``,
``--streams-per-address``) so that they do not throttle the load; everything else is
its default. The baseline is bench/baseline_app.py. Raw results: ``--save FILE`` (JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from loadgen import proc_cpu

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LOADGEN = BENCH / "loadgen.py"
PLOT = ROOT / "docs" / "img" / "latency-vs-load.png"

RK, BL = "roomkeeper", "baseline"
HIBERNATED_AFTER = 12.0
"""Seconds after its last message by which a room has hibernated (the default 10 s, and
the idle sweep's granularity)."""

UNLIMITED = [
    "--rate-burst",
    "1000000000",
    "--rate-refill",
    "1000000000",
    "--new-sessions-per-minute",
    "1000000000",
    "--new-sessions-burst",
    "1000000000",
    "--streams-per-address",
    "10000000",
]
SWEEP = [50, 100, 200, 300, 400, 500, 600, 700, 800, 1000, 1200]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- processes ------------------------------------------------------------------------


class Server:
    """One server process (pinned), started and stopped by pid; its URL and port."""

    def __init__(
        self,
        kind: str,
        args: argparse.Namespace,
        extra: list[str] | None = None,
        storage: str = "memory",
    ) -> None:
        self.kind = kind
        self.storage = storage
        self.args = args
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0
        self._out: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self, port: int) -> list[str]:
        if self.kind == RK:
            cmd = [sys.executable, "-m", "roomkeeper", "serve", "--storage", self.storage]
            cmd += ["--log-level", "warning", "--port", str(port), *UNLIMITED, *self.extra]
        else:
            cmd = [sys.executable, str(BENCH / "baseline_app.py"), "--port", str(port)]
        return pin(self.args.server_cpu, self.args) + cmd

    def start(self, port: int = 0) -> Server:
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            self.command(port), stdout=self._out, stderr=subprocess.STDOUT, cwd=ROOT
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self._out.seek(0)
            match = re.search(rb"serving on (http://\S+)", self._out.read())
            if match:
                self.url = match.group(1).decode()
                self.port = int(self.url.rsplit(":", 1)[1])
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not start: {self.output()}")

    def output(self) -> str:
        if self._out is None:
            return ""
        self._out.seek(0)
        return self._out.read().decode(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        """Stop, then start again on the same port (clients reconnect to the same URL)."""
        port = self.port
        self.stop()
        deadline = time.monotonic() + 30
        while True:
            try:
                self.start(port)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[None]:
    try:
        for server in servers:
            server.start()
        yield
    finally:
        for server in servers:
            server.stop()


def pin(cpu: str, args: argparse.Namespace) -> list[str]:
    if args.no_pin or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", cpu]


def loadgen_cmd(args: argparse.Namespace, mode: str, server: Server, extra: list[str]) -> list[str]:
    cmd = [*pin(args.gen_cpu, args), sys.executable, str(LOADGEN), mode, "--url", server.url]
    cmd += ["--protocol", server.kind, "--pid", str(server.pid), *extra]
    return cmd + (["--quick"] if args.quick else [])


def result_of(stdout: str, what: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[7:])
            return result
    raise RuntimeError(f"loadgen {what} gave no RESULT:\n{stdout[-3000:]}")


def loadgen(
    args: argparse.Namespace, mode: str, server: Server, extra: list[str], timeout: float
) -> dict[str, Any]:
    log(f"  {server.kind}: {mode} {' '.join(extra)}")
    done = subprocess.run(
        loadgen_cmd(args, mode, server, extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"loadgen {mode} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return result_of(done.stdout, mode)


def storm(
    args: argparse.Namespace, server: Server, extra: list[str], timeout: float
) -> dict[str, Any]:
    """``loadgen storm --wait-restart``: restart the server when the clients are ready.
    The result adds the restarted server's CPU seconds until the load generator exits."""
    log(f"  {server.kind}: storm {' '.join(extra)}")
    cmd = loadgen_cmd(args, "storm", server, [*extra, "--wait-restart"])
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    lines = []
    cpu = 0.0
    started = time.monotonic()
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("STORM-READY"):
                server.restart()
                cpu = proc_cpu(server.pid)
                proc.stdin.write("GO\n")
                proc.stdin.flush()
            if time.monotonic() - started > timeout:
                raise RuntimeError("storm timed out")
        proc.wait(30)
        cpu = proc_cpu(server.pid) - cpu
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        assert proc.stderr is not None
        raise RuntimeError(f"storm failed: {proc.stderr.read()[-3000:]}")
    return {**result_of("".join(lines), "storm"), "storm_server_cpu_s": round(cpu, 2)}


# --- profiling ------------------------------------------------------------------------

CATEGORIES = [
    # (package, substring of the innermost frame's "function (file:line)"), first match wins
    ("quart_trio", "(quart_trio/"),
    ("trio: run loop, tasks, cancel scopes", "(trio/_core/"),
    ("trio: sockets, streams, other", "(trio/"),
    ("hypercorn", "(hypercorn/"),
    ("h11", "(h11/"),
    ("quart", "(quart/"),
    ("werkzeug", "(werkzeug/"),
    ("prometheus_client", "(prometheus_client/"),
    ("roomkeeper.http", "(roomkeeper/http/"),
    ("roomkeeper.observe", "(roomkeeper/observe/"),
    ("roomkeeper.runtime", "(roomkeeper/runtime/"),
    ("roomkeeper (other)", "(roomkeeper/"),
    ("actors.signaling", "signaling/"),
    ("baseline app", "baseline_app.py"),
    ("outcome/attrs/sniffio", "outcome"),
]

FRAMES = [
    # (label, substring of any frame "function (file:line)" on the stack)
    ("Hypercorn: TCPServer read/parse (h11) side", "TCPServer._read_data ("),
    ("Hypercorn: app task (ASGI call)", "ASGIWrapper.__call__ ("),
    ("Quart: asgi_app request setup", "_create_request_from_scope ("),
    ("Quart: full_dispatch_request", "full_dispatch_request ("),
    ("Quart: preprocess_request (before hooks)", "preprocess_request ("),
    ("Quart: process_response (after hooks)", "process_response ("),
    ("Quart: _send_response", "_send_response ("),
    ("observe: before/after hooks", "(roomkeeper/observe/hooks.py"),
    ("http: signal handler", "signal (roomkeeper/http/api.py"),
    ("http: connect handler", "connect (roomkeeper/http/api.py"),
    ("http: API layer", "(roomkeeper/http/edge.py"),
    ("http: post_body (read + parse body)", "post_body ("),
    ("runtime: actor task (_handle)", "Activation._handle ("),
    ("actor: Room.on_message", "on_message ("),
    ("streams: StreamRegistry.send", "StreamRegistry.send ("),
    ("streams: pump (stream writer)", "StreamRegistry.pump ("),
    ("baseline: relay route", "relay (baseline_app.py"),
    ("baseline: SSE generator", "events (baseline_app.py"),
    ("h11 (anywhere)", "(h11/"),
    ("werkzeug (anywhere)", "(werkzeug/"),
    ("trio socket send", "send (trio/_socket.py"),
    ("trio socket recv", "recv (trio/_socket.py"),
]


def categorize(raw: Path) -> dict[str, Any]:
    """Self time by package of the innermost frame, and inclusive time of key frames,
    from py-spy's raw (collapsed) output; percentages of the busy samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaf = frames[-1]
        for name, needle in CATEGORIES:
            if needle in leaf:
                own[name] += count
                break
        else:
            own["python stdlib / other" if "(" in leaf else "native"] += count
        for label, needle in FRAMES:
            if any(needle in frame for frame in frames):
                inclusive[label] += count
    pct = {k: round(100 * v / max(total, 1), 1) for k, v in own.most_common()}
    inc = {k: round(100 * v / max(total, 1), 1) for k, v in inclusive.most_common()}
    return {"samples": total, "self_pct": pct, "inclusive_pct": inc}


def profile(args: argparse.Namespace) -> dict[str, Any]:
    """A throughput run per server with ``py-spy record`` on it (raw collapsed stacks)."""
    spy = shutil.which("py-spy")
    if spy is None:
        log("py-spy not found: pip install py-spy")
        return {}
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for kind in (RK, BL):
        server = Server(kind, args)
        with running(server):
            raw = out / f"{kind}.collapsed.txt"
            seconds = 6 if args.quick else 12
            rec = subprocess.Popen(
                [
                    *pin(args.gen_cpu, args),
                    spy,
                    "record",
                    "--pid",
                    str(server.pid),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--duration",
                    str(seconds),
                    "--output",
                    str(raw),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            run = loadgen(
                args, "throughput", server, ["--duration", str(seconds), "--warmup", "1"], 120
            )
            rec.wait(60)
            results[kind] = {"throughput": run, **categorize(raw)}
            log(f"  {kind} profile: {json.dumps(results[kind]['self_pct'])}")
    return results


# --- rounds ---------------------------------------------------------------------------


def relay_round(args: argparse.Namespace, order: list[str]) -> dict[str, dict[str, Any]]:
    servers = {kind: Server(kind, args) for kind in order}
    out: dict[str, dict[str, Any]] = {kind: {} for kind in order}
    tp_args = ["--duration", str(args.duration), "--warmup", "2"]
    with running(*servers.values()):
        for kind in order:
            out[kind]["throughput"] = loadgen(args, "throughput", servers[kind], tp_args, 180)
        half = round(0.5 * out[RK]["throughput"]["signals_per_s"])
        for kind in order:
            top = 1.15 * out[kind]["throughput"]["signals_per_s"]
            sweep = [r for r in SWEEP if r <= top and r not in (200, half)]
            if args.quick:
                sweep = sweep[:1]
            rates = list(dict.fromkeys([200, half, *sweep]))
            lat_args = ["--rate", ",".join(str(r) for r in rates)]
            lat_args += ["--duration", str(args.lat_duration), "--warmup", "1"]
            timeout = 60 + len(rates) * (args.lat_duration + 40)
            result = loadgen(args, "latency", servers[kind], lat_args, timeout)
            by_rate = {r["rate"]: r for r in result["rates"]}
            out[kind]["latency_200"] = by_rate[200.0]
            out[kind]["latency_half"] = by_rate[float(half)]
            out[kind]["sweep"] = result["rates"]
    return out


def idle_round(args: argparse.Namespace, order: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    extra = ["--streams", str(args.streams), "--idle", str(args.idle), "--concurrency", "64"]
    # Measured once the rooms have hibernated (--hibernate-after, 10 s): the heartbeats'
    # steady cost, not the one-off commits of 5,000 rooms going to storage.
    extra += ["--idle-after", str(HIBERNATED_AFTER)]
    for kind in order:
        server = Server(kind, args)
        with running(server):
            time.sleep(1.0)
            out[kind] = storm(args, server, extra, 900)
    return out


def hibernation_run(args: argparse.Namespace) -> dict[str, Any]:
    """On the default storage, SQLite: a hibernated room's state is on disk, not in RAM
    (with ``--storage memory`` every session record would count as the room's memory)."""
    with tempfile.TemporaryDirectory() as data:
        storage = str(Path(data) / "rooms.sqlite3")
        server = Server(RK, args, ["--hibernate-after", "1", "--grace", "3600"], storage)
        extra = ["--rooms", str(args.rooms), "--sample", str(args.sample)]
        with running(server):
            time.sleep(1.0)
            return loadgen(args, "hibernation", server, extra, 3600)


# --- reporting ------------------------------------------------------------------------


def median(values: list[float | None]) -> float | None:
    real = [v for v in values if v is not None]
    return statistics.median(real) if real else None


def get(result: dict[str, Any], path: str) -> Any:
    value: Any = result
    for part in path.split("."):
        if value is None:
            return None
        value = value.get(part)
    return value


ROWS: list[tuple[str, str, Callable[[dict[str, Any]], float | None], str]] = [
    # label, unit, extractor from one round's result of one server, target
    (
        "max signals/s (closed loop, 32 in flight)",
        "/s",
        lambda r: get(r, "throughput.signals_per_s"),
        "≥ 1.0x baseline",
    ),
    (
        "server CPU per signal at max",
        "µs",
        lambda r: cpu_per_signal(r.get("throughput", {})),
        "",
    ),
    ("p50 at 200 signals/s", "ms", lambda r: get(r, "latency_200.latency_ms.p50"), ""),
    (
        "p99 at 200 signals/s",
        "ms",
        lambda r: get(r, "latency_200.latency_ms.p99"),
        "≤ baseline",
    ),
    (
        "p99 at 50 % of roomkeeper's max",
        "ms",
        lambda r: get(r, "latency_half.latency_ms.p99"),
        "< 10 ms",
    ),
    ("memory per idle stream (RSS)", "KB", lambda r: get(r, "idle.kb_per_stream"), "≤ 30 KB"),
    ("streams opened per second", "/s", lambda r: get(r, "idle.streams_per_s"), "≥ 1,000/s"),
    (
        "reconnect storm, 10,000 clients: all back",
        "s",
        lambda r: get(r, "idle.storm_seconds"),
        "",
    ),
    (
        "10,000 idle streams: server CPU (heartbeats)",
        "% core",
        lambda r: get(r, "idle.idle_server_cpu_pct"),
        "< 5 %",
    ),
]


def cpu_per_signal(run: dict[str, Any]) -> float | None:
    cpu, rate = run.get("server_cpu_pct"), run.get("signals_per_s")
    if not cpu or not rate:
        return None
    return round(float(cpu) / 100 / float(rate) * 1e6, 1)


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return text


def table(rounds: list[dict[str, dict[str, Any]]], hib: list[dict[str, Any]]) -> str:
    lines = [
        "| figure | roomkeeper | baseline | roomkeeper/baseline | target |",
        "|---|---:|---:|---:|---|",
    ]
    for label, unit, extract, target in ROWS:
        if not rounds:
            break
        rk = median([extract(r[RK]) for r in rounds])
        bl = median([extract(r[BL]) for r in rounds])
        ratio = f"{rk / bl:.2f}x" if rk is not None and bl else "-"
        lines.append(f"| {label} ({unit}) | {fmt(rk)} | {fmt(bl)} | {ratio} | {target or '-'} |")
    if hib:
        per_room = median([h.get("bytes_per_room") for h in hib])
        wake50 = median([get(h, "wake_ms.p50") for h in hib])
        wake99 = median([get(h, "wake_ms.p99") for h in hib])
        warm99 = median([get(h, "warm_ms.p99") for h in hib])
        rooms = hib[0].get("rooms")
        lines.append(
            f"| hibernated room, {rooms:,} rooms (RSS bytes/room) | {fmt(per_room)} | - | - "
            "| < 1 KB |"
        )
        lines.append(f"| wake-on-signal p50 (ms) | {fmt(wake50)} | - | - | - |")
        lines.append(f"| wake-on-signal p99 (ms) | {fmt(wake99)} | - | - | < 2 ms |")
        lines.append(f"| same room, awake: p99 (ms) | {fmt(warm99)} | - | - | - |")
    return "\n".join(lines)


def details(rounds: list[dict[str, dict[str, Any]]], hib: list[dict[str, Any]]) -> str:
    """Per-round figures and generator CPU, to judge the noise and the generator."""
    out = [
        "| round | server | max/s | CPU µs/signal | p99 @200 | p99 @50 % | KB/stream "
        "| opens/s | storm s | idle CPU % | gen CPU % (max) | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for i, r in enumerate(rounds, 1):
        for kind in (RK, BL):
            x = r[kind]
            gen = max(
                v
                for v in [
                    get(x, "throughput.gen_cpu_pct"),
                    *[s.get("gen_cpu_pct") for s in x.get("sweep", [])],
                    get(x, "idle.idle_gen_cpu_pct"),
                    0.0,
                ]
                if v is not None
            )
            errors: Counter[str] = Counter()
            for part in (x.get("throughput", {}), *x.get("sweep", [])):
                errors.update({k: v for k, v in part.get("statuses", {}).items() if k != "200"})
            for key in ("stream_errors", "storm_errors"):
                errors.update(get(x, f"idle.{key}") or {})
            out.append(
                f"| {i} | {kind} | {fmt(get(x, 'throughput.signals_per_s'))} "
                f"| {fmt(cpu_per_signal(x.get('throughput', {})))} "
                f"| {fmt(get(x, 'latency_200.latency_ms.p99'))} "
                f"| {fmt(get(x, 'latency_half.latency_ms.p99'))} "
                f"| {fmt(get(x, 'idle.kb_per_stream'))} | {fmt(get(x, 'idle.streams_per_s'))} "
                f"| {fmt(get(x, 'idle.storm_seconds'))} "
                f"| {fmt(get(x, 'idle.idle_server_cpu_pct'))} | {fmt(gen)} "
                f"| {dict(errors) or '-'} |"
            )
    for h in hib:
        out.append(
            f"\nhibernation: {h.get('rooms'):,} rooms made at {fmt(h.get('rooms_per_s'))}/s; "
            f"RSS {h.get('rss_before_kb'):,} → {h.get('rss_after_kb'):,} KB; "
            f"wake p50/p99/max {get(h, 'wake_ms.p50')}/{get(h, 'wake_ms.p99')}/"
            f"{get(h, 'wake_ms.max')} ms (n={get(h, 'wake_ms.n')}); awake p50/p99 "
            f"{get(h, 'warm_ms.p50')}/{get(h, 'warm_ms.p99')} ms; statuses {h.get('statuses')}"
        )
    return "\n".join(out)


def sweep_medians(
    rounds: list[dict[str, dict[str, Any]]], kind: str
) -> list[tuple[float, float, float, float]]:
    """(offered rate, delivered/s, p50, p99) medians over rounds, by offered rate."""
    by_rate: dict[float, list[dict[str, Any]]] = {}
    for r in rounds:
        for point in r[kind].get("sweep", []):
            if point["rate"] in SWEEP:  # not the round's own "50 % of max" rate
                by_rate.setdefault(point["rate"], []).append(point)
    out = []
    for rate in sorted(by_rate):
        points = by_rate[rate]
        p50 = median([get(p, "latency_ms.p50") for p in points])
        p99 = median([get(p, "latency_ms.p99") for p in points])
        got = median([p.get("signals_per_s") for p in points])
        if p50 is not None and p99 is not None and got is not None:
            out.append((rate, got, p50, p99))
    return out


def plot(rounds: list[dict[str, dict[str, Any]]], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (pip install matplotlib)"
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    colors = {RK: "tab:blue", BL: "tab:orange"}
    for kind in (RK, BL):
        points = sweep_medians(rounds, kind)
        if not points:
            continue
        rates = [p[0] for p in points]
        ax.plot(rates, [p[2] for p in points], "o--", color=colors[kind], label=f"{kind} p50")
        ax.plot(rates, [p[3] for p in points], "s-", color=colors[kind], label=f"{kind} p99")
        for rate, got, _, p99 in points:
            if got < 0.95 * rate:  # saturated: the server did not deliver the offered load
                ax.annotate(
                    "sat.",
                    (rate, p99),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=8,
                    color=colors[kind],
                )
    ax.axhline(10, color="grey", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (signals/s, open loop)")
    ax.set_ylabel("POST start → SSE arrival (ms)")
    ax.set_title("Relay latency against offered load (one server core; medians of rounds)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for package in ("trio", "hypercorn", "quart", "quart-trio", "h11", "orjson"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{package} {metadata.version(package)}")
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, {', '.join(versions)}"
    )


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(wanted, soft)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run(
    args: argparse.Namespace, skip: set[str]
) -> tuple[list[dict[str, dict[str, Any]]], list[dict[str, Any]], dict[str, Any]]:
    """Every round, the hibernation runs and the profiles: the raw results."""
    rounds: list[dict[str, dict[str, Any]]] = []
    for i in range(args.rounds):
        order = [RK, BL] if i % 2 == 0 else [BL, RK]
        log(f"round {i + 1}/{args.rounds}: {' then '.join(order)}")
        result: dict[str, dict[str, Any]] = {RK: {}, BL: {}}
        if "relay" not in skip:
            for kind, part in relay_round(args, order).items():
                result[kind].update(part)
        if "idle" not in skip:
            for kind, part in idle_round(args, order).items():
                result[kind]["idle"] = part
        rounds.append(result)
    hib = []
    if "hibernation" not in skip:
        for i in range(args.hibernation_rounds):
            log(f"hibernation {i + 1}/{args.hibernation_rounds}: {args.rooms:,} rooms")
            hib.append(hibernation_run(args))
    profiled = profile(args) if args.profile else {}
    return rounds, hib, profiled


def report(
    args: argparse.Namespace,
    rounds: list[dict[str, dict[str, Any]]],
    hib: list[dict[str, Any]],
    profiled: dict[str, Any],
) -> None:
    """The tables, and the plot when there are latency sweeps."""
    print(table(rounds, hib))
    print("\nPer round:\n")
    print(details(rounds, hib))
    if any("sweep" in r[RK] for r in rounds):
        print("\nLatency against offered load (medians; for the plot):\n")
        print("| server | offered/s | delivered/s | p50 ms | p99 ms |")
        print("|---|---:|---:|---:|---:|")
        for kind in (RK, BL):
            for rate, got, p50, p99 in sweep_medians(rounds, kind):
                print(f"| {kind} | {rate:g} | {got:g} | {p50:.2f} | {p99:.2f} |")
        problem = plot(rounds, args.plot)
        shown = args.plot.relative_to(ROOT) if args.plot.is_relative_to(ROOT) else args.plot
        print(f"\nplot: {problem or shown}")
    for kind, prof in profiled.items():
        print(f"\nprofile of {kind} at full load ({prof['samples']} samples):")
        print(f"  self time by package: {json.dumps(prof['self_pct'])}")
        print(f"  inclusive time of key frames: {json.dumps(prof['inclusive_pct'])}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--quick", action="store_true", help="a small, short smoke run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="throughput seconds")
    parser.add_argument("--lat-duration", type=float, default=5.0, help="seconds per rate")
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idleness")
    parser.add_argument("--rooms", type=int, default=100_000, help="hibernated rooms")
    parser.add_argument("--sample", type=int, default=500, help="rooms woken by a signal")
    parser.add_argument("--hibernation-rounds", type=int, default=1)
    parser.add_argument("--skip", default="", help="comma list of: relay,idle,hibernation")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--gen-cpu", default="1")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument(
        "--plot",
        type=Path,
        help=f"the PNG (default {PLOT.relative_to(ROOT)}; with --quick, a temporary file)",
    )
    parser.add_argument("--save", type=Path, help="write raw results (JSON) here")
    parser.add_argument(
        "--report", type=Path, help="run nothing: print the tables and plot of a --save file"
    )
    parser.add_argument("--profile", help="directory: py-spy both servers at full load")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if args.quick:
        args.rounds = 1
        args.duration = 2.0
        args.lat_duration = 2.0
        args.streams = min(args.streams, 300)
        args.idle = min(args.idle, 2.0)
        args.rooms = min(args.rooms, 1000)
        args.sample = min(args.sample, 50)
    if args.plot is None:
        args.plot = Path(tempfile.mkdtemp()) / "latency-vs-load.png" if args.quick else PLOT
    fds = raise_fd_limit(args.streams * 2 + 1000)
    if fds < args.streams + 500:
        log(f"warning: only {fds} file descriptors; fewer streams will open")
    started = time.monotonic()
    title = "quick" if args.quick else f"{args.rounds} rounds"
    print(f"# roomkeeper relay benchmark ({title})\n")
    print(f"machine: {machine()}\n")
    if args.report:
        saved = json.loads(args.report.read_text())
        rounds, hib, profiled = saved["rounds"], saved["hibernation"], saved.get("profile", {})
    else:
        rounds, hib, profiled = run(args, skip)
    report(args, rounds, hib, profiled)
    if args.save:
        args.save.write_text(
            json.dumps({"rounds": rounds, "hibernation": hib, "profile": profiled}, indent=1)
        )
    print(f"\ntook {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
