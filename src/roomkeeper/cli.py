"""The `roomkeeper` command: `serve [flags]`, `ticket --room R`, `simulate WORKLOAD ...`,
`trace-report TRACE` and `--version`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import attrs

from roomkeeper import __version__
from roomkeeper.config import (
    Config,
    ConfigError,
    config_from_sources,
    default_storage,
    env_name,
    flag_name,
)

__all__ = ["build_parser", "config_from_args", "main"]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _default_text(field: attrs.Attribute[Any]) -> str:
    if field.name == "storage":
        return default_storage()
    if isinstance(field.default, tuple):
        return ",".join(field.default)
    return str(field.default)


def build_parser() -> argparse.ArgumentParser:
    """The parser for every subcommand; each setting of `Config` is a flag of `serve`."""
    parser = _Parser(prog="roomkeeper", description="A self-hosted WebRTC signaling server.")
    parser.add_argument("--version", action="version", version=f"roomkeeper {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the server until SIGINT or SIGTERM",
        description="Run the server. Each flag can also be set by the environment "
        "variable named after it; a flag wins over the environment.",
    )
    _add_settings(serve)
    _add_ticket(commands)
    _add_simulate(commands)
    _add_trace_report(commands)
    return parser


def _add_settings(command: argparse.ArgumentParser) -> None:
    """Every setting of `Config` as a flag of ``command``."""
    for field in attrs.fields(Config):
        command.add_argument(
            flag_name(field.name),
            dest=field.name,
            metavar=field.metadata["metavar"],
            default=None,
            help=f"{field.metadata['help']} "
            f"(env {env_name(field.name)}, default {_default_text(field)})".replace("%", "%%"),
        )


def _add_ticket(commands: Any) -> None:
    ticket = commands.add_parser(
        "ticket",
        help="print a room ticket for the server's --admission",
        description="Print a ticket that admits new sessions to a room, in the format of "
        "--admission (read from the same flags and ROOMKEEPER_* variables as serve): "
        "secret: tickets, or JWTs for jwt:hmac:; jwt:key: and jwt:jwks: need the private "
        "key (--private-key), whose public key must be the configured one.",
    )
    ticket.add_argument(
        "--room", required=True, help="the room (for a JWT: or a prefix ending in *)"
    )
    ticket.add_argument(
        "--ttl", type=float, default=3600.0, metavar="SECONDS", help="lifetime (default 3600)"
    )
    ticket.add_argument(
        "--private-key", metavar="PEM", help="the PEM private key for jwt:key: and jwt:jwks:"
    )
    _add_settings(ticket)


def _add_simulate(commands: Any) -> None:
    sim = commands.add_parser(
        "simulate",
        help="simulate a workload on the real runtime and room actor, deterministically",
        description="Run synthetic peers against the real runtime and Room actor in "
        "simulated time, write the lifecycle trace, and print a summary. The same workload "
        "and seed give the same trace, byte for byte. Exit status 1 if a signal the room "
        "accepted was lost or delivered twice. See docs/research.md.",
    )
    sim.add_argument("workload", metavar="WORKLOAD", help="a .toml or .json workload file")
    sim.add_argument("--seed", type=int, required=True, metavar="N", help="the random seed")
    sim.add_argument("--trace", required=True, metavar="FILE", help="write the trace here")
    sim.add_argument("--summary", metavar="FILE.json", help="also write the summary as JSON")
    sim.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a workload setting, e.g. runtime.hibernate_after=1 (repeatable)",
    )
    sim.add_argument(
        "--no-tracemalloc",
        dest="tracemalloc",
        action="store_false",
        help="skip measuring peak Python memory (tracemalloc slows a run about 3-5 times)",
    )
    sim.add_argument(
        "--memory-every",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="simulated seconds between samples of the live Python heap (default 600)",
    )


def _add_trace_report(commands: Any) -> None:
    report = commands.add_parser(
        "trace-report",
        help="summarise a lifecycle trace and plot it",
        description="Print the summary of a lifecycle trace (from `simulate` or `serve "
        "--trace`) and write PNG plots: live and hibernated actors, wakes by cause, mailbox "
        "wait and handling time. Plots need matplotlib: pip install 'roomkeeper[plot]'.",
    )
    report.add_argument("trace", metavar="TRACE", help="a trace file (JSON lines)")
    report.add_argument(
        "--out", metavar="DIR", help="where to write <trace name>-*.png (default: beside TRACE)"
    )


def config_from_args(ns: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    """The `Config` for parsed `serve` flags and an environment (flag > env > default)."""
    flags = {field.name: getattr(ns, field.name, None) for field in attrs.fields(Config)}
    return config_from_sources(flags, environ)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `roomkeeper` script; returns the process exit status."""
    ns = build_parser().parse_args(argv)
    if ns.command == "simulate":
        return _simulate(ns)
    if ns.command == "trace-report":
        return _trace_report(ns)
    if ns.command == "ticket":
        return _ticket(ns)
    from roomkeeper.admission import AdmissionError, load_admission

    try:
        config = config_from_args(ns, os.environ)
        load_admission(config.admission, config.jwt_rules)  # its key files, checked early
    except ConfigError as err:
        print(f"roomkeeper: error: {err}", file=sys.stderr)
        return 2
    except AdmissionError as err:
        print(f"roomkeeper: error: --admission: {err}", file=sys.stderr)
        return 2
    from roomkeeper.server import serve_forever  # imported late: `--help` stays fast

    return serve_forever(config)


def _fail(command: str, message: object) -> int:
    print(f"roomkeeper {command}: error: {message}", file=sys.stderr)
    return 2


def _writable(path: str) -> str | None:
    """Why a file cannot be written at ``path``, or None."""
    folder = Path(path).expanduser().resolve().parent
    if Path(path).is_dir():
        return f"{path} is a folder"
    if not folder.is_dir():
        return f"no folder {folder}"
    if not os.access(folder, os.W_OK):
        return f"cannot write in {folder}"
    return None


def _ticket(ns: argparse.Namespace) -> int:
    from roomkeeper.admission import AdmissionError, mint_ticket, parse_spec
    from roomkeeper.http.parsing import MAX_ROOM_BYTES

    try:
        config = config_from_args(ns, os.environ)
    except ConfigError as err:
        return _fail("ticket", err)
    if not ns.room or len(ns.room.encode()) > MAX_ROOM_BYTES:
        return _fail("ticket", f"--room: 1 to {MAX_ROOM_BYTES} UTF-8 bytes")
    if not 0 < ns.ttl <= 10**9:
        return _fail("ticket", "--ttl: must be a positive number of seconds")
    spec = parse_spec(config.admission)
    if spec is None:
        return _fail("ticket", "admission is off: set --admission or ROOMKEEPER_ADMISSION")
    if spec.kind == "secret":
        if ns.private_key:
            return _fail("ticket", "--private-key is for jwt:key: and jwt:jwks: admission")
        print(mint_ticket(spec.value, ns.room, ns.ttl))
        return 0
    from roomkeeper.jwt_tickets import mint_jwt, signing_key

    try:
        pem = Path(ns.private_key).expanduser().read_bytes() if ns.private_key else None
        signer = signing_key(spec, pem)
    except OSError as err:
        return _fail("ticket", f"--private-key: {err.strerror or err}")
    except AdmissionError as err:
        return _fail("ticket", err)
    print(mint_jwt(signer, ns.room, ns.ttl, config.jwt_rules))
    return 0


def _simulate(ns: argparse.Namespace) -> int:
    from roomkeeper.sim import WorkloadError, format_summary, load_workload, simulate
    from roomkeeper.sim.engine import violations

    try:
        workload = load_workload(ns.workload, ns.overrides)
    except WorkloadError as err:
        return _fail("simulate", err)
    for flag, path in (("--trace", ns.trace), ("--summary", ns.summary)):
        problem = path is not None and _writable(path)
        if problem:
            return _fail("simulate", f"{flag}: {problem}")
    if not ns.memory_every > 0:
        return _fail("simulate", "--memory-every: must be a positive number of seconds")
    summary = simulate(
        workload, ns.seed, ns.trace, measure_memory=ns.tracemalloc, memory_every=ns.memory_every
    )
    print(format_summary(summary))
    if ns.summary:
        Path(ns.summary).write_text(json.dumps(summary, indent=2) + "\n")
    broken = violations(summary)
    if broken:
        print(f"roomkeeper simulate: delivery check failed: {broken}", file=sys.stderr)
        return 1
    return 0


def _trace_report(ns: argparse.Namespace) -> int:
    from roomkeeper.sim.plots import PlotsUnavailable, write_plots
    from roomkeeper.sim.report import TraceError, TraceStats, format_summary

    try:
        stats = TraceStats.from_file(ns.trace)
    except TraceError as err:
        return _fail("trace-report", err)
    print(format_summary(stats.summary()))
    if not stats.events:
        print("the trace is empty: nothing to plot", file=sys.stderr)
        return 0
    trace = Path(ns.trace)
    out = Path(ns.out) if ns.out else trace.parent
    try:
        written = write_plots(stats, out, trace.stem)
    except PlotsUnavailable as err:
        print(err, file=sys.stderr)
        return 0
    except OSError as err:
        return _fail("trace-report", f"--out: {err.strerror or err}")
    for path in written:
        print(f"wrote {path}")
    return 0
