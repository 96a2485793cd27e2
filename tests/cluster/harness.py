"""Real processes for the cluster tests: PostgreSQL, N ``roomkeeper serve`` nodes, nginx.

Everything listens on 127.0.0.1 and every process is a subprocess ended by its PID in
``Cluster.close``. Nodes run with short timings (``--lease-ttl 2``, ``--heartbeat 1``), and
nginx runs docs/nginx/cluster.conf as shipped, with the ports, the server list and its
timeouts scaled to those timings (``render_cluster_conf``).

The ``leases`` table gets an audit trigger (tests only): every committed change of a lease
row, fencing touches included, is appended to ``lease_audit`` in the row's lock order,
which for one row is its commit order. ``fencing_violations`` reads it: a commit fenced
by an epoch older than one already granted is a write after a takeover.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx
import psycopg

from roomkeeper.runtime.ids import ActorId

from ..support.postgres import PostgresServer, find_bindir

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_CONF = ROOT / "docs" / "nginx" / "cluster.conf"
ROOMS = "rooms"  # the namespace of rooms (roomkeeper.http.app.ROOMS)

LEASE_TTL = 2.0
HEARTBEAT = 1.0
NODE_FLAGS = {
    "--lease-ttl": str(LEASE_TTL),
    "--heartbeat": str(HEARTBEAT),
    "--grace": "15",
    "--hibernate-after": "1",
    "--trust-proxy": "1",
    # Every test client is 127.0.0.1: lift the per-address limits.
    "--new-sessions-burst": "100000",
    "--new-sessions-per-minute": "1000000",
    "--streams-per-address": "100000",
    "--rate-burst": "100000",
    "--rate-refill": "100000",
}
# nginx timeouts scaled from the shipped ones to these timings: a stream quiet for 3
# heartbeats is cut; a POST may wait out one TTL (plus 2 s to settle) and then some.
NGINX_EDITS = {
    "proxy_read_timeout 30s;": "proxy_read_timeout 3s;",
    "proxy_read_timeout 15s;": "proxy_read_timeout 6s;",
}
FAIL_TIMEOUT = "fail_timeout=2s"  # about one TTL, as the shipped config reasons


# --- what is installed -----------------------------------------------------------------------


def _required(what: str, found: str | Path | None) -> None:
    """Skip the test when ``what`` is missing (fail it under CI=true). pytest is imported
    here only: bench/cluster_bench.py uses this module outside pytest."""
    if found is None:
        import pytest

        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} is not installed: .ci/run should have installed it")
        pytest.skip(f"{what} is not installed")


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    _required("nginx", found)
    assert found is not None
    return found


def require_postgres() -> None:
    _required("PostgreSQL", find_bindir())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _alive(proc: subprocess.Popen[bytes] | None) -> bool:
    return proc is not None and proc.poll() is None


def _end(proc: subprocess.Popen[bytes] | None, wait: float = 10) -> None:
    """End a process by its PID: wake it if frozen, SIGTERM, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- nodes -------------------------------------------------------------------------------


@attrs.define
class Node:
    """One ``roomkeeper serve`` process on a fixed port; restarts keep port and name."""

    name: str
    port: int
    dsn: str
    flags: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    frozen: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        args = [sys.executable, "-m", "roomkeeper", "serve", "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--advertise", self.url, "--node-id", self.name]
        args += ["--storage", self.dsn]
        for flag, value in self.flags.items():
            args += [flag, value]
        return args

    def spawn(self) -> None:
        """Start the process (see ``wait_ready``)."""
        assert not _alive(self.proc), f"{self.name} is already running"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            log.write(f"--- start {time.time():.3f}\n".encode())
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self.frozen = False

    def wait_ready(self, wait: float = 30) -> None:
        """Until the node answers /healthz (its schema migrated, its port bound)."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(self.proc):
                raise RuntimeError(f"{self.name} exited:\n{self.log()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start within {wait} s:\n{self.log()[-4000:]}")

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.frozen = False

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.frozen = False

    def stop(self) -> None:
        _end(self.proc)
        self.frozen = False

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return _alive(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# --- nginx -------------------------------------------------------------------------------


def render_cluster_conf(listen_port: int, node_ports: Sequence[int]) -> str:
    """docs/nginx/cluster.conf for these ports, with the test timings (``NGINX_EDITS``)."""
    conf = CLUSTER_CONF.read_text("utf-8")
    servers = re.findall(r"^    server 127\.0\.0\.1:\d+ [^\n]*;\n", conf, re.M)
    assert servers, "cluster.conf no longer lists its nodes as `server 127.0.0.1:PORT ...;`"
    template = servers[0]
    listed = "".join(
        re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", template).replace(
            "fail_timeout=10s", FAIL_TIMEOUT
        )
        for port in node_ports
    )
    conf = conf.replace("".join(servers), listed)
    edits = {"listen 80;": f"listen 127.0.0.1:{listen_port};", **NGINX_EDITS}
    for old, new in edits.items():
        assert conf.count(old) == 1, f"cluster.conf no longer has one {old!r}"
        conf = conf.replace(old, new)
    return conf


@attrs.define
class Nginx:
    """nginx in its own prefix: ``nginx -p PREFIX -c nginx.conf -g 'daemon off; ...'``."""

    prefix: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    def write(self, node_ports: Sequence[int]) -> None:
        (self.prefix / "cluster.conf").write_text(render_cluster_conf(self.port, node_ports))
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "".join(
            f"    {kind}_temp_path {kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        self.conf.write_text(
            f"{user}worker_processes 2;\nerror_log error.log info;\n"
            "events { worker_connections 1024; }\n"
            f"http {{\n    access_log access.log;\n{temp}    include cluster.conf;\n}}\n"
        )
        binary = nginx_binary()
        check = subprocess.run(
            [binary, "-t", "-p", str(self.prefix), "-c", "nginx.conf", "-e", "error.log"],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stderr

    def start(self, node_ports: Sequence[int]) -> None:
        self.write(node_ports)
        args = [nginx_binary(), "-p", str(self.prefix), "-c", "nginx.conf", "-e", "error.log"]
        self.proc = subprocess.Popen(
            [*args, "-g", "daemon off; pid nginx.pid;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(self.proc):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not start:\n{self.log()}")

    def reload(self, node_ports: Sequence[int]) -> None:
        """Rewrite the server list and reload (SIGHUP): old workers keep their streams."""
        self.write(node_ports)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def close(self) -> None:
        _end(self.proc)

    def log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


# --- PostgreSQL ------------------------------------------------------------------------------

AUDIT = """
CREATE TABLE IF NOT EXISTS lease_audit (
    seq bigserial PRIMARY KEY, actor text NOT NULL, owner text NOT NULL, epoch bigint NOT NULL,
    kind text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE OR REPLACE FUNCTION lease_audit_row() RETURNS trigger AS $$
BEGIN
    INSERT INTO lease_audit (actor, owner, epoch, kind) VALUES (
        NEW.actor, NEW.owner, NEW.epoch,
        CASE
            WHEN TG_OP = 'INSERT' OR NEW.epoch <> OLD.epoch THEN 'grant'
            WHEN NEW.expires_at = '-infinity' AND OLD.expires_at <> '-infinity' THEN 'release'
            WHEN NEW.expires_at <> OLD.expires_at THEN 'renew'
            ELSE 'fence'
        END);
    RETURN NEW;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS lease_audit ON leases;
CREATE TRIGGER lease_audit AFTER INSERT OR UPDATE ON leases
    FOR EACH ROW EXECUTE FUNCTION lease_audit_row();
"""


def actor_hex(room: str) -> str:
    return ActorId(ROOMS, room).hex


def node_name(owner: str) -> str:
    """The node's name (``--node-id``) in a lease owner ``NAME/BOOT-ID``."""
    return owner.split("/", 1)[0]


@attrs.frozen
class Lease:
    room_hex: str
    owner: str  # the node's name and its boot id: a restarted node is a new owner
    owner_addr: str
    epoch: int
    live: bool

    @property
    def node(self) -> str:
        """The owner's name, as in X-Roomkeeper-Node."""
        return node_name(self.owner)


class Database:
    """The cluster's database, read directly for assertions."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def query(self, sql: str, params: Mapping[str, Any] | Sequence[Any] = ()) -> list[Any]:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            return list(conn.execute(sql, params).fetchall())

    def install_audit(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(AUDIT)

    def lease(self, room: str) -> Lease | None:
        rows = self.query(
            "SELECT actor, owner, owner_addr, epoch, expires_at > clock_timestamp()"
            " FROM leases WHERE actor = %s",
            (actor_hex(room),),
        )
        return Lease(*rows[0]) if rows else None

    def grants(self, room: str) -> list[tuple[str, int]]:
        """(owner, epoch) of every grant of the room's lease, in order."""
        rows = self.query(
            "SELECT owner, epoch FROM lease_audit WHERE actor = %s AND kind = 'grant' ORDER BY seq",
            (actor_hex(room),),
        )
        return [(str(owner), int(epoch)) for owner, epoch in rows]

    def alarm(self, room: str) -> float | None:
        rows = self.query("SELECT alarm FROM actors WHERE actor = %s", (actor_hex(room),))
        return rows[0][0] if rows else None

    def fencing_violations(self) -> list[str]:
        """Every fenced commit, renewal or release made with an epoch older than one
        already granted for the same room (a write after a takeover); [] if none."""
        granted: dict[str, int] = {}
        bad = []
        rows = self.query("SELECT seq, actor, owner, epoch, kind FROM lease_audit ORDER BY seq")
        for seq, actor, owner, epoch, kind in rows:
            top = granted.get(actor, 0)
            if kind == "grant":
                if epoch <= top:
                    bad.append(f"#{seq} {actor[:12]}: epoch {epoch} granted again after {top}")
                granted[actor] = max(top, epoch)
            elif epoch < top:
                bad.append(f"#{seq} {actor[:12]}: {kind} by {owner} with epoch {epoch} < {top}")
        return bad

    def audit_count(self) -> int:
        return int(self.query("SELECT count(*) FROM lease_audit")[0][0])


# --- the cluster -------------------------------------------------------------------------------


class Cluster:
    """PostgreSQL (shared per session: a fresh database here), ``size`` nodes and nginx."""

    def __init__(
        self,
        pg: PostgresServer,
        tmp: Path,
        size: int = 3,
        flags: Mapping[str, str] | None = None,
        relayed: str | None = None,
    ) -> None:
        """``relayed``: the node that reaches PostgreSQL through ``relay`` (tcp_relay.py),
        which ``partition`` and ``heal_partition`` stop and start."""
        self.pg = pg
        self.relayed = relayed
        self.relay: subprocess.Popen[bytes] | None = None
        self.tmp = tmp
        self.dsn = pg.new_database()
        self.db = Database(self.dsn)
        self.flags = {**NODE_FLAGS, **(flags or {})}
        self.nodes: list[Node] = []
        prefix = tmp / "nginx"
        prefix.mkdir()
        self.nginx = Nginx(prefix, free_port())
        try:
            first = self.add_node(start=False)
            first.start()  # alone, so the schema exists before the audit trigger
            self.db.install_audit()
            more = [self.add_node(start=False) for _ in range(size - 1)]
            for node in more:
                node.spawn()
            for node in more:
                node.wait_ready()
            self.nginx.start(self.ports)
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return self.nginx.url

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def add_node(self, *, start: bool = True) -> Node:
        name = f"n{len(self.nodes) + 1}"
        dsn = self._relay_dsn() if name == self.relayed else self.dsn
        node = Node(name, free_port(), dsn, dict(self.flags), self.tmp / f"{name}.log")
        self.nodes.append(node)
        if start:
            node.start()
        return node

    def _relay_dsn(self) -> str:
        port = free_port()
        relay = Path(__file__).with_name("tcp_relay.py")
        self.relay = subprocess.Popen(
            [sys.executable, str(relay), str(port), str(self.pg.port)], stdout=subprocess.PIPE
        )
        assert self.relay.stdout is not None
        assert self.relay.stdout.readline().strip() == b"relaying"
        return self.dsn.replace(f"127.0.0.1:{self.pg.port}/", f"127.0.0.1:{port}/")

    def partition(self) -> None:
        """Cut the relayed node off PostgreSQL: its packets go nowhere, silently."""
        assert self.relay is not None
        self.relay.send_signal(signal.SIGSTOP)

    def heal_partition(self) -> None:
        assert self.relay is not None
        self.relay.send_signal(signal.SIGCONT)

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def owner(self, room: str) -> Node:
        lease = self.db.lease(room)
        assert lease is not None, f"room {room} has no lease"
        return self.node(lease.node)

    def others(self, node: Node) -> list[Node]:
        return [other for other in self.nodes if other is not node]

    def heal(self) -> None:
        """Bring PostgreSQL and every node back up (thawed, restarted) for the next test."""
        if self.pg.pid is None:
            self.pg.start_again()
        if self.relay is not None:
            self.heal_partition()
        for node in self.nodes:
            if node.frozen:
                node.thaw()
            if not node.running:
                node.start()

    def logs(self) -> str:
        parts = [f"===== {node.name}\n{node.log()[-6000:]}" for node in self.nodes]
        return "\n".join([*parts, f"===== nginx\n{self.nginx.log()[-3000:]}"])

    def close(self) -> None:
        self.nginx.close()
        for node in self.nodes:
            node.stop()
        _end(self.relay)


@contextlib.contextmanager
def running_cluster(
    pg: PostgresServer,
    tmp: Path,
    size: int = 3,
    flags: Mapping[str, str] | None = None,
    relayed: str | None = None,
) -> Iterator[Cluster]:
    nginx_binary()
    cluster = Cluster(pg, tmp, size, flags, relayed)
    try:
        yield cluster
    finally:
        cluster.close()


# --- the API's integration suite against a cluster --------------------------------------------

_postgres: list[PostgresServer] = []


def session_postgres() -> PostgresServer:
    """One PostgreSQL for the whole run, started on first use, stopped at exit."""
    if not _postgres:
        require_postgres()
        server = PostgresServer.start()
        atexit.register(server.close)
        _postgres.append(server)
    return _postgres[0]


class ClusterServer:
    """A 3-node cluster behind nginx that stands in for one ``ServerProcess`` of
    tests/integration (its ``url`` is nginx's) when ROOMKEEPER_TEST_CLUSTER=1."""

    def __init__(self, tmp: Path, flags: Mapping[str, str]) -> None:
        flags = {k: v for k, v in flags.items() if k != "--storage"}
        self.cluster = Cluster(session_postgres(), tmp, 3, flags)
        self.url = self.cluster.url
        self.flags = dict(flags)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """nginx's process (what ``base`` checks is alive)."""
        return self.cluster.nginx.proc

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self.cluster.nginx.port

    def log(self) -> str:
        return self.cluster.logs()

    def kill(self) -> None:
        self.cluster.close()
