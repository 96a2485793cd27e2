"""A throwaway PostgreSQL server for tests: its own data directory, port and socket.

    server = PostgresServer.start()          # initdb + start on a free 127.0.0.1 port
    dsn = server.new_database()              # a fresh empty database: a libpq URL to it
    server.stop(); server.start_again()      # or server.restart(): same port, same data
    server.close()                           # stop (by PID) and delete everything

Durability is off (``fsync``, ``synchronous_commit``, ``full_page_writes``): the data
only has to survive a clean restart. Authentication is ``trust`` (any password is
accepted, which lets tests put one in a DSN). As root, initdb and the server run as the
``postgres`` user (they refuse root); otherwise as the current user. ``find_bindir``
locates the binaries (Debian's /usr/lib/postgresql/<version>/bin, or the PATH).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

_databases = itertools.count(1)


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: the newest Debian version, else the
    PATH's; None when PostgreSQL is not installed."""
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if debian:
        return debian[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One PostgreSQL server in a temporary folder. ``pid`` is the postmaster's."""

    def __init__(self, bindir: Path, root: Path, port: int) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.port = port
        self.pid: int | None = None
        self._user: str | None = "postgres" if os.geteuid() == 0 else None

    # --- life -------------------------------------------------------------------------

    @classmethod
    def start(cls, bindir: Path | None = None) -> PostgresServer:
        """initdb into a new temporary folder and start the server."""
        bindir = bindir or find_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (no initdb found)")
        root = Path(tempfile.mkdtemp(prefix="roomkeeper-pg-"))
        server = cls(bindir, root, _free_port())
        try:
            if server._user is not None:
                entry = pwd.getpwnam(server._user)
                os.chown(root, entry.pw_uid, entry.pw_gid)
            server._run(
                "initdb",
                *("-D", str(server.data), "-U", "postgres", "--auth=trust"),
                *("--no-instructions", "--encoding=UTF8", "--locale=C"),
            )
            server.start_again()
        except BaseException:
            server.close()
            raise
        return server

    def start_again(self) -> None:
        """Start the (stopped) server on the same port and data."""
        options = " ".join(
            [
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root}",
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        log = self.root / "server.log"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(log), "-w", "-o", options, "start")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are cut); waits until it is gone."""
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown
        deadline = time.monotonic() + 30
        while _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown
                deadline += 30
            time.sleep(0.02)

    def restart(self) -> None:
        self.stop()
        self.start_again()

    def close(self) -> None:
        """Stop the server and delete its folder."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # --- use --------------------------------------------------------------------------

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database (a copy of template0) and return its DSN."""
        name = f"test_{os.getpid()}_{next(_databases)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            # FILE_COPY (PostgreSQL 15+) copies the few template files instead of logging them.
            fast = " STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else ""
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0{fast}')
        return self.dsn(name)

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
