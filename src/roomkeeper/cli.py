"""The `roomkeeper` command: `roomkeeper serve [flags]` and `roomkeeper --version`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
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
    for field in attrs.fields(Config):
        serve.add_argument(
            flag_name(field.name),
            dest=field.name,
            metavar=field.metadata["metavar"],
            default=None,
            help=f"{field.metadata['help']} "
            f"(env {env_name(field.name)}, default {_default_text(field)})".replace("%", "%%"),
        )
    return parser


def config_from_args(ns: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    """The `Config` for parsed `serve` flags and an environment (flag > env > default)."""
    flags = {field.name: getattr(ns, field.name, None) for field in attrs.fields(Config)}
    return config_from_sources(flags, environ)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `roomkeeper` script; returns the process exit status."""
    ns = build_parser().parse_args(argv)
    try:
        config = config_from_args(ns, os.environ)
    except ConfigError as err:
        print(f"roomkeeper: error: {err}", file=sys.stderr)
        return 2
    from roomkeeper.server import serve_forever  # imported late: `--help` stays fast

    return serve_forever(config)
