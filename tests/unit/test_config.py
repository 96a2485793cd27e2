"""Settings: defaults, precedence flag > environment > default, and every check."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from roomkeeper.config import (
    Config,
    ConfigError,
    config_from_sources,
    default_memory_budget,
    default_storage,
    env_name,
    flag_name,
    redact_url,
)
from roomkeeper.ice import IceServers
from roomkeeper.jwt_tickets import JwtRules

HOME = {"HOME": "/home/someone"}
DEFAULT_DB = "/home/someone/.local/share/roomkeeper/roomkeeper.sqlite3"


def build(flags: Mapping[str, str | None] | None = None, /, **env: str) -> Config:
    return config_from_sources(flags or {}, {**HOME, **env})


def error(flags: Mapping[str, str | None] | None = None, /, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        build(flags, **env)
    return str(info.value)


def test_defaults() -> None:
    config = build()
    assert attrs.asdict(config) == {
        "host": "127.0.0.1",
        "port": 8787,
        "heartbeat": 10.0,
        "grace": 30.0,
        "rate_burst": 200.0,
        "rate_refill": 50.0,
        "hibernate_after": 10.0,
        "storage": DEFAULT_DB,
        "cors_origins": ("*",),
        "log_level": "info",
        "queue_limit": 256,
        "mailbox_size": 1024,
        "max_body": 102400,
        "retry_ms": 2000,
        "log_format": "text",
        "trace": "",
        "admin_token": "",
        "keep_alive_timeout": 5.0,
        "body_timeout": 10.0,
        "send_timeout": 20.0,
        "stream_buffer": 1048576,
        "max_peers": 64,
        "new_sessions_per_minute": 60.0,
        "new_sessions_burst": 30.0,
        "streams_per_address": 200,
        "trust_proxy": 0,
        "session_bytes": 2 << 20,
        "room_bytes": 16 << 20,
        "durable_signals": "on",
        "gc_freeze": "on",
        "memory_budget": default_memory_budget(),
        "admission": "",
        "advertise": "",
        "node_id": "",
        "lease_ttl": 10.0,
        "application": "roomkeeper_actors.signaling.app:APPLICATION",
        "stun_uris": (),
        "turn_uris": (),
        "turn_secret": "",
        "turn_ttl": 3600,
        "admission_room_claim": "room",
        "admission_audience": "",
        "admission_issuer": "",
        "admission_leeway": 30.0,
    }
    assert not config.in_memory
    assert config.ice_servers == IceServers()
    assert config.jwt_rules == JwtRules()


def test_config_is_frozen_and_keyword_only() -> None:
    config = Config(storage="memory")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        Config("0.0.0.0")  # type: ignore[call-arg]
    assert attrs.evolve(config, port=9000).port == 9000


def test_direct_default_storage_uses_the_process_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert Config().storage == str(tmp_path / "roomkeeper" / "roomkeeper.sqlite3")


def test_storage_follows_xdg_data_home() -> None:
    env = {"XDG_DATA_HOME": "/data/xdg", **HOME}
    assert default_storage(env) == "/data/xdg/roomkeeper/roomkeeper.sqlite3"
    assert config_from_sources({}, env).storage == "/data/xdg/roomkeeper/roomkeeper.sqlite3"


@pytest.mark.parametrize("xdg", ["", "relative/dir"])
def test_storage_ignores_empty_or_relative_xdg(xdg: str) -> None:
    assert default_storage({"XDG_DATA_HOME": xdg, **HOME}) == DEFAULT_DB


def test_storage_without_home_variable_uses_the_user_home() -> None:
    expected = Path.home() / ".local/share/roomkeeper/roomkeeper.sqlite3"
    assert default_storage({}) == str(expected)


def test_memory_storage() -> None:
    assert build({"storage": "memory"}).in_memory
    assert build(ROOMKEEPER_STORAGE="memory").in_memory
    assert build({"storage": "/srv/rk.sqlite3"}).storage == "/srv/rk.sqlite3"


def test_the_default_memory_budget_is_a_quarter_of_the_machine_capped() -> None:
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert default_memory_budget() == min(physical // 4, 1 << 30)


def test_names() -> None:
    assert flag_name("rate_burst") == "--rate-burst"
    assert env_name("hibernate_after") == "ROOMKEEPER_HIBERNATE_AFTER"


# --- precedence ---------------------------------------------------------------------------

EXAMPLES: list[tuple[str, str, Any]] = [
    ("host", "0.0.0.0", "0.0.0.0"),
    ("port", "9000", 9000),
    ("heartbeat", "2.5", 2.5),
    ("grace", "5", 5.0),
    ("rate_burst", "10", 10.0),
    ("rate_refill", "0.5", 0.5),
    ("hibernate_after", "60", 60.0),
    ("storage", "/tmp/x.sqlite3", "/tmp/x.sqlite3"),
    ("cors_origins", "https://a.example, http://localhost:3000", None),
    ("log_level", "DEBUG", "debug"),
    ("queue_limit", "16", 16),
    ("mailbox_size", "64", 64),
    ("max_body", "2048", 2048),
    ("retry_ms", "500", 500),
    ("log_format", "JSON", "json"),
    ("trace", "/tmp/trace.jsonl", "/tmp/trace.jsonl"),
    ("admin_token", "s3cret-admin-token-0123", "s3cret-admin-token-0123"),
    ("keep_alive_timeout", "2.5", 2.5),
    ("body_timeout", "3", 3.0),
    ("send_timeout", "7.5", 7.5),
    ("stream_buffer", "65536", 65536),
    ("max_peers", "8", 8),
    ("new_sessions_per_minute", "600", 600.0),
    ("new_sessions_burst", "5", 5.0),
    ("streams_per_address", "1000", 1000),
    ("trust_proxy", "1", 1),
    ("session_bytes", "65536", 65536),
    ("room_bytes", "1048576", 1048576),
    ("memory_budget", "268435456", 268435456),
    ("durable_signals", "OFF", "off"),
    ("gc_freeze", "Off", "off"),
    ("admission", "secret:0123456789abcdef", "secret:0123456789abcdef"),
    ("advertise", "http://10.0.0.7:8787", "http://10.0.0.7:8787"),
    ("node_id", "node-1", "node-1"),
    ("lease_ttl", "2.5", 2.5),
    ("application", "my_app.actors:APP", "my_app.actors:APP"),
    ("stun_uris", "stun:stun.example:3478, stun:[::1]", ("stun:stun.example:3478", "stun:[::1]")),
    ("turn_uris", "turn:t.example:3478?transport=udp", ("turn:t.example:3478?transport=udp",)),
    ("turn_secret", "coturn-static-secret-0123", "coturn-static-secret-0123"),
    ("turn_ttl", "600", 600),
    ("admission_room_claim", "rk_room", "rk_room"),
    ("admission_audience", "https://rooms.example", "https://rooms.example"),
    ("admission_issuer", "https://auth.example", "https://auth.example"),
    ("admission_leeway", "5", 5.0),
]
# Settings that mean something only beside another: given with it in the tests above.
COMPANIONS = {
    "turn_uris": {"turn_secret": "coturn-static-secret-0123"},
    "admission_audience": {"admission": "jwt:hmac:" + "h" * 32},
    "admission_issuer": {"admission": "jwt:hmac:" + "h" * 32},
}


def test_examples_cover_every_setting() -> None:
    assert {name for name, _, _ in EXAMPLES} == {f.name for f in attrs.fields(Config)}


@pytest.mark.parametrize(("name", "text", "value"), EXAMPLES)
def test_env_over_default(name: str, text: str, value: Any) -> None:
    config = build(COMPANIONS.get(name), **{env_name(name): text})
    expected = value if value is not None else ("https://a.example", "http://localhost:3000")
    assert getattr(config, name) == expected


@pytest.mark.parametrize(("name", "text", "value"), EXAMPLES)
def test_flag_over_env(name: str, text: str, value: Any) -> None:
    default = getattr(build(), name)
    config = build(
        {**COMPANIONS.get(name, {}), name: text}, **{env_name(name): "garbage that would fail"}
    )
    assert getattr(config, name) != default
    expected = value if value is not None else ("https://a.example", "http://localhost:3000")
    assert getattr(config, name) == expected


def test_unset_flag_falls_through_to_env() -> None:
    assert build({"port": None}, ROOMKEEPER_PORT="1234").port == 1234


def test_empty_env_counts_as_unset() -> None:
    assert build(ROOMKEEPER_PORT="", ROOMKEEPER_HOST="").port == 8787


def test_unrelated_env_ignored() -> None:
    assert build(PORT="1", ROOMKEEPER="x", roomkeeper_port="2").port == 8787


# --- checks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("port", "abc", "must be an integer"),
        ("port", "80.5", "must be an integer"),
        ("port", "1_000", "must be an integer"),
        ("port", "-1", "from 0 to 65535"),
        ("port", "65536", "from 0 to 65535"),
        ("port", "9" * 5000, "must be an integer"),
        ("heartbeat", "0", "positive number"),
        ("heartbeat", "-1", "positive number"),
        ("heartbeat", "nan", "positive number"),
        ("heartbeat", "inf", "positive number"),
        ("heartbeat", "1e999", "positive number"),
        ("heartbeat", "ten", "must be a number"),
        ("grace", "0", "positive number"),
        ("rate_burst", "0.5", "at least 1"),
        ("rate_refill", "0", "positive number"),
        ("hibernate_after", "-0.1", "positive number"),
        ("host", " ", "non-empty string"),
        ("storage", "", "non-empty string"),
        ("log_level", "verbose", "one of debug, info"),
        ("cors_origins", "", "non-empty list of origins"),
        ("cors_origins", " , ", "non-empty list of origins"),
        ("cors_origins", "*,https://a.example", "cannot be combined"),
        ("cors_origins", "https://a.example/", "is not an origin"),
        ("cors_origins", "a.example", "is not an origin"),
        ("cors_origins", "https://a.example/path", "is not an origin"),
        ("queue_limit", "0", "positive integer"),
        ("mailbox_size", "-5", "positive integer"),
        ("max_body", "0", "positive integer"),
        ("retry_ms", "0", "positive integer"),
        ("retry_ms", "1.5", "must be an integer"),
        ("log_format", "xml", "one of text, json"),
        ("admin_token", "too-short", "at least 16 visible ASCII"),
        ("admin_token", "sixteen chars but spaces", "at least 16 visible ASCII"),
        ("keep_alive_timeout", "0", "positive number"),
        ("body_timeout", "-1", "positive number"),
        ("send_timeout", "nan", "positive number"),
        ("stream_buffer", "0", "positive integer"),
        ("max_peers", "0", "positive integer"),
        ("new_sessions_per_minute", "0", "positive number"),
        ("new_sessions_burst", "0.5", "at least 1"),
        ("streams_per_address", "0", "positive integer"),
        ("trust_proxy", "-1", "at least 0"),
        ("trust_proxy", "yes", "must be an integer"),
        ("memory_budget", "0", "positive integer"),
        ("durable_signals", "no", "'on' or 'off'"),
        ("gc_freeze", "1", "'on' or 'off'"),
        ("session_bytes", "1e6", "must be an integer"),
        ("admission", "0123456789abcdef", "must be empty or one of 'secret:...'"),
        ("admission", "jwt:hmac:too-short-for-hs256", "at least 32 visible ASCII"),
        ("admission", "jwt:key:", "followed by a file path"),
        ("stun_uris", "turn:t.example", "must start with stun:"),
        ("stun_uris", "https://stun.example", "must start with stun:"),
        ("stun_uris", "stun:", "is not a stun URI"),
        ("turn_uris", "stun:s.example", "must start with turn or turns:"),
        ("turn_uris", "turn:a.example,turn:b example", "is not a turn or turns URI"),
        ("turn_secret", "short", "at least 16 visible ASCII"),
        ("turn_ttl", "0", "from 1 to 86400"),
        ("turn_ttl", "86401", "from 1 to 86400"),
        ("admission_room_claim", "", "claim name"),
        ("admission_leeway", "-1", "at least 0"),
        ("admission", "secret:short", "at least 16 visible ASCII"),
        ("admission", "secret:sixteen chars but spaces", "at least 16 visible ASCII"),
        ("application", "my_app.actors", "must be MODULE:NAME"),
        ("application", "my app:APP", "must be MODULE:NAME"),
        ("application", "my_app:APP.x", "must be MODULE:NAME"),
    ],
)
def test_bad_values_name_their_source(name: str, text: str, problem: str) -> None:
    from_flag = error({name: text})
    assert from_flag.startswith(flag_name(name) + ": ")
    assert problem in from_flag
    if text:  # an empty variable is unset, not wrong
        from_env = error(**{env_name(name): text})
        assert from_env.startswith(env_name(name) + ": ")
        assert problem in from_env


def test_error_messages_stay_short() -> None:
    message = error({"port": "9" * 5000})
    assert len(message) < 120
    assert "\n" not in message


def test_origins_accepted_forms() -> None:
    config = build({"cors_origins": "https://a.example:8443,null,http://[::1]:5173"})
    assert config.cors_origins == ("https://a.example:8443", "null", "http://[::1]:5173")
    assert build({"cors_origins": " * "}).cors_origins == ("*",)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", True),
        ("port", 1.0),
        ("port", 70000),
        ("heartbeat", math.nan),
        ("heartbeat", math.inf),
        ("heartbeat", False),
        ("heartbeat", "10"),
        ("grace", 0),
        ("rate_burst", 0),
        ("queue_limit", 1.5),
        ("log_level", "INFO"),
        ("cors_origins", ["*"]),
        ("cors_origins", ()),
        ("storage", None),
        ("host", ""),
    ],
)
def test_direct_construction_checks_too(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        Config(**{field: value})
    assert str(info.value).startswith(f"{field}: ")


def test_direct_construction_accepts_ints_for_floats_and_huge_ints() -> None:
    config = Config(heartbeat=1, grace=10**400, port=0, storage="memory")
    assert (config.heartbeat, config.port) == (1, 0)


def test_admin_token_stays_out_of_repr_and_messages() -> None:
    secret = "s3cret-admin-token-0123"
    config = build({"admin_token": secret})
    assert secret not in repr(config)
    assert secret not in str(attrs.evolve(config, port=1))
    assert "wrong-but-secret" not in error({"admin_token": "wrong-but-secret x"})


def test_admission_secret_stays_out_of_repr_and_messages() -> None:
    config = build({"admission": "secret:ticket-signing-secret-42"})
    assert config.admission == "secret:ticket-signing-secret-42"
    assert "ticket-signing-secret" not in repr(config)
    assert "not-quite-a-secret" not in error({"admission": "secret:not-quite-a-secret x"})


@pytest.mark.parametrize(
    "url", ["postgresql://u@db/rooms", "postgres://u:pw@db:5432/rooms", "POSTGRESQL://db/x"]
)
def test_postgresql_urls_are_storage_shared_by_nodes(url: str) -> None:
    config = build({"storage": url})
    assert config.clustered and not config.in_memory


@pytest.mark.parametrize("url", ["mysql://u@db/rooms", "sqlite:///tmp/x.db", "redis://db"])
def test_a_storage_url_with_an_unknown_scheme_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match=r"unknown scheme.*postgresql://"):
        build({"storage": url})


def test_the_storage_password_never_shows_in_the_config_repr() -> None:
    config = build({"storage": "postgresql://rooms:hunter2-secret@db.internal:5432/rooms"})
    assert "hunter2" not in repr(config)
    assert "postgresql://rooms:***@db.internal:5432/rooms" in repr(config)
    assert redact_url("postgres://db/rooms") == "postgres://db/rooms"


@pytest.mark.parametrize("ttl", ["0.1", "0", "-1", "1000", "nan"])
def test_lease_ttl_is_bounded(ttl: str) -> None:
    with pytest.raises(ConfigError, match="lease-ttl"):
        config_from_sources({"lease_ttl": ttl}, {})
    hs = "jwt-signing-secret-" + "x" * 20
    assert hs not in repr(build({"admission": f"jwt:hmac:{hs}"}))
    assert "jwt-short-secret" not in error({"admission": "jwt:hmac:jwt-short-secret"})


def test_turn_secret_stays_out_of_repr_and_messages() -> None:
    secret = "coturn-static-secret-0123"
    config = build({"turn_uris": "turn:127.0.0.1:3478"}, ROOMKEEPER_TURN_SECRET=secret)
    assert config.ice_servers.secret == secret
    assert secret not in repr(config) and secret not in repr(config.ice_servers)
    assert "short secret" not in error({"turn_secret": "short secret"})


def test_turn_uris_need_the_turn_secret() -> None:
    message = error({"turn_uris": "turn:127.0.0.1:3478"})
    assert "--turn-uris needs the TURN secret" in message
    assert "ROOMKEEPER_TURN_SECRET" in message
    assert build({"stun_uris": "stun:127.0.0.1:3478"}).ice_servers.stun_uris  # STUN alone: fine


@pytest.mark.parametrize("name", ["admission_audience", "admission_issuer"])
def test_audience_and_issuer_need_jwt_admission(name: str) -> None:
    assert "applies only to --admission jwt:" in error({name: "x"})
    assert "applies only to" in error({name: "x", "admission": "secret:0123456789abcdef"})
