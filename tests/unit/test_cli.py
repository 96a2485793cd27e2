"""The command line: flags, --version, and one-line errors with status 2."""

from __future__ import annotations

import sys
import types
from typing import Any

import attrs
import pytest

import roomkeeper
from roomkeeper.cli import build_parser, config_from_args, main
from roomkeeper.config import Config, flag_name


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"roomkeeper {roomkeeper.__version__}"
    assert roomkeeper.__version__ == "0.1.0"


def test_every_setting_is_a_serve_flag(capsys: pytest.CaptureFixture[str]) -> None:
    ns = build_parser().parse_args(["serve"])
    for field in attrs.fields(Config):
        assert getattr(ns, field.name) is None
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    serve_help = capsys.readouterr().out
    for field in attrs.fields(Config):
        assert flag_name(field.name) in serve_help


def test_config_from_args_precedence() -> None:
    ns = build_parser().parse_args(["serve", "--port", "9001", "--cors-origins", "https://a.b"])
    env = {"ROOMKEEPER_PORT": "9002", "ROOMKEEPER_GRACE": "3", "HOME": "/h"}
    config = config_from_args(ns, env)
    assert (config.port, config.grace, config.cors_origins) == (9001, 3.0, ("https://a.b",))
    assert config.heartbeat == 10.0


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["serve", "--nope"],
        ["serve", "--port"],
        ["serve", "extra"],
    ],
)
def test_bad_flags_one_line_status_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("roomkeeper")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv", [["serve", "--port", "x"], ["serve", "--heartbeat", "0"], ["serve", "--log-level", "x"]]
)
def test_bad_values_one_line_status_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"roomkeeper: error: {argv[1]}: ")


def test_bad_env_value(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ROOMKEEPER_PORT", "http")
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == (
        "roomkeeper: error: ROOMKEEPER_PORT: must be an integer, got 'http'\n"
    )


def test_serve_hands_the_config_to_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Config] = []

    def serve_forever(config: Config) -> int:
        seen.append(config)
        return 7

    fake: Any = types.ModuleType("roomkeeper.server")
    fake.serve_forever = serve_forever
    monkeypatch.setitem(sys.modules, "roomkeeper.server", fake)
    monkeypatch.setenv("ROOMKEEPER_STORAGE", "memory")
    assert main(["serve", "--port", "0"]) == 7
    assert seen[0].port == 0 and seen[0].in_memory
