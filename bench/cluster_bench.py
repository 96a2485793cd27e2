#!/usr/bin/env python
"""The scale-out benchmark of issue 11: nodes on PostgreSQL, behind nginx, on this machine.

    python bench/cluster_bench.py                # 3 rounds, about 5 minutes
    python bench/cluster_bench.py --quick        # a smoke run, about a minute
    python bench/cluster_bench.py --save FILE    # raw results as JSON too

It starts its own throwaway PostgreSQL (tests/support/postgres.py, durability off, with
``pg_stat_statements``), the nodes (``roomkeeper serve``, rate limits lifted as in
bench/relay_bench.py) and nginx with docs/nginx/cluster.conf (tests/cluster/harness.py),
and drives them with bench/loadgen.py. Per round, alternating the order:

1. ceiling, one node, straight to it: SQLite against PostgreSQL, the same loadgen command
   (``throughput``: 32 POSTs in flight over 16 rooms of 4 peers): delivered signals/s and
   latency p50/p99 (POST start to event on the recipient's stream). Node pinned to core 0
   and loadgen to core 1 (``taskset``), PostgreSQL unpinned.
2. through nginx: 1 node, then 2 nodes, on PostgreSQL, the same command against nginx's
   URL. Nothing pinned: two nodes, nginx, PostgreSQL and loadgen share the two cores.

Then once, on one node and PostgreSQL: the statements PostgreSQL ran per connect, signal
and leave (``pg_stat_statements`` calls, less those of an idle window as long as the
measured one: lease renewals and the look for orphaned alarms), COMMITs per
operation, and the latency of a connect (request to ``session``
event) through nginx on a cold room (never seen: lease taken, state loaded) and on a warm
one (live on its node).

The table gives medians over rounds. The last line on stdout is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))  # tests/support and tests/cluster: the harness of the tests

import httpx  # noqa: E402
import psycopg  # noqa: E402
from relay_bench import UNLIMITED, log, machine, median, result_of  # noqa: E402

from tests.cluster.harness import Nginx, free_port  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402

LOADGEN = BENCH / "loadgen.py"
ROOMS, PEERS = "16", "4"
OPS = ("connect_cold", "connect_warm", "signal", "leave")


# --- processes --------------------------------------------------------------------------


def pin(core: str, args: argparse.Namespace) -> list[str]:
    if args.no_pin or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", core]


class Node:
    """One ``roomkeeper serve`` on a fixed port."""

    def __init__(self, storage: str, name: str, prefix: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "roomkeeper", "serve", "--storage", storage]
        cmd += ["--port", str(self.port), "--log-level", "warning", *UNLIMITED]
        if storage.startswith("postgresql://"):
            cmd += ["--node-id", name, "--advertise", self.url]
        self.out = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the node
        self.proc = subprocess.Popen([*prefix, *cmd], stdout=self.out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.out.seek(0)
        raise RuntimeError(f"node did not start: {self.out.read()[-2000:]!r}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def nodes(storages: list[str], prefix: list[str]) -> Iterator[list[Node]]:
    started: list[Node] = []
    try:
        for i, storage in enumerate(storages):
            started.append(Node(storage, f"n{i + 1}", prefix))
        yield started
    finally:
        for node in started:
            node.stop()


@contextlib.contextmanager
def nginx_in_front(ports: list[int]) -> Iterator[Nginx]:
    with tempfile.TemporaryDirectory(prefix="rk-nginx-") as tmp:
        nginx = Nginx(Path(tmp), free_port())
        nginx.start(ports)
        try:
            yield nginx
        finally:
            nginx.close()


def start_postgres() -> PostgresServer:
    pg = PostgresServer.start()
    try:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        pg.restart()
    except BaseException:
        pg.close()
        raise
    return pg


def fresh_database(pg: PostgresServer) -> str:
    dsn = pg.new_database()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return dsn


# --- loadgen --------------------------------------------------------------------------------


def throughput(args: argparse.Namespace, url: str, pid: int | None) -> dict[str, Any]:
    prefix = pin("1", args) if pid else []
    cmd = [*prefix, sys.executable, str(LOADGEN), "throughput"]
    cmd += ["--url", url, "--rooms", ROOMS, "--peers", PEERS]
    if pid:
        cmd += ["--pid", str(pid)]
    if args.quick:
        cmd.append("--quick")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = result_of(done.stdout, "throughput")
    lat = result["latency_ms"]
    log(f"    {result['signals_per_s']} signals/s, p50 {lat.get('p50')} p99 {lat.get('p99')} ms")
    return result


def ceiling_round(args: argparse.Namespace, pg: PostgresServer, order: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in order:
        with tempfile.TemporaryDirectory(prefix="rk-bench-") as tmp:
            storage = str(Path(tmp) / "rooms.sqlite3") if kind == "sqlite" else fresh_database(pg)
            log(f"  1 node, {kind}, direct")
            with nodes([storage], pin("0", args)) as (node,):
                out[kind] = throughput(args, node.url, node.proc.pid)
    return out


def nginx_round(args: argparse.Namespace, pg: PostgresServer, order: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for count in order:
        dsn = fresh_database(pg)
        log(f"  {count} node(s), PostgreSQL, through nginx")
        with nodes([dsn] * count, []) as running, nginx_in_front([n.port for n in running]) as nx:
            before = [cpu_seconds(n.proc.pid) for n in running]
            result = throughput(args, nx.url, None)
            result["node_cpu_s"] = [
                round(cpu_seconds(n.proc.pid) - b, 2) for n, b in zip(running, before, strict=True)
            ]
            out[f"{count}"] = result
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


# --- statements and cold connects -------------------------------------------------------------


class Statements:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def reset(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_statements_reset()")

    def snapshot(self) -> tuple[dict[str, int], int]:
        """Calls per statement in this database (BEGIN and COMMIT included), and the
        explicit transactions among them (COMMITs; pg_stat_database's counters lag behind
        while a pooled connection idles)."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT s.query, s.calls FROM pg_stat_statements s"
                " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()"
                " AND s.query NOT LIKE '%pg_stat%'"
            ).fetchall()
        calls = {str(q): int(c) for q, c in rows}
        return calls, sum(c for q, c in calls.items() if q.strip().upper() == "COMMIT")


class Op:
    """Measure one kind of operation: statements and transactions per operation, less an
    idle window of the same length."""

    def __init__(self, stats: Statements) -> None:
        self.stats = stats

    def __enter__(self) -> Op:
        self.stats.reset()
        self.x0 = self.stats.snapshot()[1]
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.took = time.monotonic() - self.t0
        self.calls, x1 = self.stats.snapshot()
        self.xacts = x1 - self.x0

    def per(self, n: int, idle: tuple[float, float, float]) -> dict[str, Any]:
        idle_calls_per_s, idle_xacts_per_s, _ = idle
        total = sum(self.calls.values())
        top = sorted(self.calls.items(), key=lambda kv: -kv[1])[:6]
        return {
            "statements": round((total - idle_calls_per_s * self.took) / n, 2),
            "transactions": round((self.xacts - idle_xacts_per_s * self.took) / n, 2),
            "top": [(" ".join(q.split())[:90], round(c / n, 2)) for q, c in top],
        }


def sse_session(client: httpx.Client, url: str, room: str) -> tuple[float, httpx.Response, Any]:
    """Open a stream and read its session event: (seconds it took, response, session)."""
    t = time.perf_counter()
    request = client.build_request("GET", f"{url}/api/connect", params={"room": room})
    response = client.send(request, stream=True)
    assert response.status_code == 200, response.status_code
    for line in response.iter_lines():
        if line.startswith("data:"):
            return time.perf_counter() - t, response, json.loads(line[5:])
    raise RuntimeError("stream ended before its session event")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def statements_and_connects(args: argparse.Namespace, pg: PostgresServer) -> dict[str, Any]:
    n = 20 if args.quick else 100
    dsn = fresh_database(pg)
    stats = Statements(dsn)
    out: dict[str, Any] = {}
    with nodes([dsn], []) as (node,), nginx_in_front([node.port]) as nx:
        limits = httpx.Limits(max_connections=4 * n + 10, max_keepalive_connections=20)
        with httpx.Client(timeout=10, limits=limits) as client:
            time.sleep(1)
            with Op(stats) as idle:
                time.sleep(3)
            idle_rate = (sum(idle.calls.values()) / idle.took, idle.xacts / idle.took, idle.took)
            rooms = [f"bench-{uuid.uuid4().hex[:10]}" for _ in range(n)]
            streams: list[tuple[httpx.Response, Any, str]] = []
            cold: list[float] = []
            warm: list[float] = []
            with Op(stats) as connects:
                for room in rooms:  # the first peer of a room: a cold room
                    took, response, session = sse_session(client, nx.url, room)
                    cold.append(took)
                    streams.append((response, session, room))
            out["connect_cold"] = connects.per(n, idle_rate)
            with Op(stats) as connects:
                for room in rooms:  # the second: the room is live on its node
                    took, response, session = sse_session(client, nx.url, room)
                    warm.append(took)
                    streams.append((response, session, room))
            out["connect_warm"] = connects.per(n, idle_rate)
            peers = {room: [s for _, s, r in streams if r == room] for room in rooms}
            with Op(stats) as signals:
                for room, (a, b) in peers.items():
                    body = {"sender": a["session_id"], "to": b["session_id"], "token": a["token"]}
                    body["signal"] = {"sdp": "x" * 200}
                    got = client.post(f"{nx.url}/api/signal", params={"room": room}, json=body)
                    assert got.status_code == 200, got.text
            out["signal"] = signals.per(n, idle_rate)
            with Op(stats) as leaves:
                for room, (a, _) in peers.items():
                    body = {"sender": a["session_id"], "token": a["token"]}
                    got = client.post(f"{nx.url}/api/leave", params={"room": room}, json=body)
                    assert got.status_code == 200, got.text
                time.sleep(1)  # the closed streams' commits
            out["leave"] = leaves.per(n, idle_rate)
            out["idle_statements_per_s"] = round(idle_rate[0], 2)
            for response, _, _ in streams:
                response.close()
            out["connect_ms"] = {
                "cold": {"p50": pct(cold, 0.5), "p99": pct(cold, 0.99)},
                "warm": {"p50": pct(warm, 0.5), "p99": pct(warm, 0.99)},
                "rooms": n,
            }
    for what in OPS:
        log(
            f"  per {what}: {out[what]['statements']} statements, {out[what]['transactions']} xacts"
        )
    log(f"  connect through nginx: {out['connect_ms']}")
    return out


# --- report -------------------------------------------------------------------------------------


def table(rounds: list[dict[str, Any]], once: dict[str, Any]) -> str:
    def med(section: str, key: str, path: list[str]) -> float | None:
        values = []
        for r in rounds:
            value: Any = r[section][key]
            for p in path:
                value = value.get(p) if isinstance(value, dict) else None
            values.append(value)
        return median(values)

    lines = [
        "| setup | signals/s | p50 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    rows = [
        ("1 node, SQLite, direct", "ceiling", "sqlite"),
        ("1 node, PostgreSQL, direct", "ceiling", "postgresql"),
        ("1 node, PostgreSQL, through nginx", "nginx", "1"),
        ("2 nodes, PostgreSQL, through nginx", "nginx", "2"),
    ]
    for label, section, key in rows:
        sps = med(section, key, ["signals_per_s"])
        p50 = med(section, key, ["latency_ms", "p50"])
        p99 = med(section, key, ["latency_ms", "p99"])
        lines.append(f"| {label} | {sps} | {p50} | {p99} |")
    sq, pq = (
        med("ceiling", "sqlite", ["signals_per_s"]),
        med("ceiling", "postgresql", ["signals_per_s"]),
    )
    one, two = med("nginx", "1", ["signals_per_s"]), med("nginx", "2", ["signals_per_s"])
    if sq and pq:
        lines.append(f"\nPostgreSQL/SQLite ceiling: {pq / sq:.2f}")
    if one and two:
        lines.append(f"2 nodes / 1 node through nginx: {two / one:.2f}")
    lines.append("\n| per operation (1 node, PostgreSQL) | statements | COMMITs |")
    lines.append("|---|---|---|")
    for what in OPS:
        lines.append(f"| {what} | {once[what]['statements']} | {once[what]['transactions']} |")
    c = once["connect_ms"]
    lines.append(
        f"\nconnect through nginx, {c['rooms']} rooms: cold p50 {c['cold']['p50']} ms, "
        f"p99 {c['cold']['p99']} ms; warm p50 {c['warm']['p50']} ms, p99 {c['warm']['p99']} ms"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 round, short runs")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--save", type=Path, help="write the raw results here (JSON)")
    args = parser.parse_args()
    rounds_n = 1 if args.quick else args.rounds
    commit = subprocess.run(  # the code measured: read before anything runs
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    pg = start_postgres()
    try:
        rounds = []
        for i in range(rounds_n):
            log(f"round {i + 1}/{rounds_n}")
            flip = i % 2 == 1
            ceiling = ceiling_round(
                args, pg, ["postgresql", "sqlite"] if flip else ["sqlite", "postgresql"]
            )
            behind = nginx_round(args, pg, [2, 1] if flip else [1, 2])
            rounds.append({"ceiling": ceiling, "nginx": behind})
        log("statements per operation, connect latency")
        once = statements_and_connects(args, pg)
    finally:
        pg.close()
    result = {"machine": machine(), "commit": commit, "rounds": rounds, "once": once}
    report = table(rounds, once)
    print(report, file=sys.stderr)
    if args.save:
        args.save.write_text(json.dumps(result, indent=1))
    summary = {"table": report, "commit": commit, "machine": result["machine"]}
    print("RESULT " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
