"""The server's settings: one frozen attrs class, filled from flags, environment and defaults.

Each setting is a field of `Config` whose metadata says how to read it from text (for a
command-line flag or a `ROOMKEEPER_<NAME>` variable) and how to check it. A flag wins over
the environment, the environment over the default.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from .admission import AdmissionError, parse_spec
from .gcpolicy import REGROWTH, YOUNG
from .ice import MAX_TTL, STUN_SCHEMES, TURN_SCHEMES, IceServers, parse_uris, uri_problem
from .jwt_tickets import JwtRules

__all__ = [
    "ENV_PREFIX",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MAX_BODY",
    "MEMORY",
    "Config",
    "ConfigError",
    "config_from_sources",
    "default_memory_budget",
    "default_storage",
    "env_name",
    "flag_name",
    "redact_url",
]

ENV_PREFIX = "ROOMKEEPER_"
MEMORY = "memory"
MAX_BODY = 102_400
"""The default largest POST body (`--max-body`), in bytes (the HTTP layer's default too)."""
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
MIN_ADMIN_TOKEN = 16
DEFAULT_APPLICATION = "roomkeeper_actors.signaling.app:APPLICATION"
"""The actors that answer the API (``roomkeeper.application``): the signaling room."""

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
STORAGE_KINDS = f"'{MEMORY}', a SQLite file path, or a postgresql:// (postgres://) URL"
MIN_TURN_SECRET = 16

_INT = re.compile(r"[+-]?[0-9]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_APPLICATION = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*", re.ASCII)
_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s]+")

Check = Callable[[Any], str | None]
Parse = Callable[[str], Any]


class ConfigError(ValueError):
    """A setting has a bad value; the message names the setting and says what is wrong."""


def default_storage(environ: Mapping[str, str] | None = None) -> str:
    """`<data dir>/roomkeeper.sqlite3`, the data dir following the XDG base directory spec."""
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():
        base = Path(xdg)
    else:
        home = env.get("HOME") or str(Path.home())
        base = Path(home) / ".local" / "share"
    return str(base / "roomkeeper" / "roomkeeper.sqlite3")


MEMORY_BUDGET_SHARE = 4
"""The default ``--memory-budget`` is this fraction (1/N) of physical memory ..."""
MEMORY_BUDGET_CAP = 1 << 30
"""... at most this many bytes ..."""
MEMORY_BUDGET_FALLBACK = 256 << 20
"""... or this when the machine's memory cannot be read."""


def default_memory_budget() -> int:
    """Bytes of signals the rooms may hold: a quarter of physical memory, at most 1 GiB."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return MEMORY_BUDGET_FALLBACK
    if physical <= 0:
        return MEMORY_BUDGET_FALLBACK
    return min(physical // MEMORY_BUDGET_SHARE, MEMORY_BUDGET_CAP)


def _show(value: object) -> str:
    """A repr short enough for a one-line error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- checks: each returns what is wrong with a value, or None --------------------------------


def _finite(value: object) -> float | None:
    """The value if it is a finite int or float (not a bool), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def _positive(value: object) -> str | None:
    number = _finite(value)
    if number is None or number <= 0:
        return f"must be a positive number, got {_show(value)}"
    return None


def _at_least_one(value: object) -> str | None:
    number = _finite(value)
    if number is None or number < 1:
        return f"must be a number of at least 1, got {_show(value)}"
    return None


def _positive_int(value: object) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        return f"must be a positive integer, got {_show(value)}"
    return None


def _non_negative_int(value: object) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return f"must be an integer of at least 0, got {_show(value)}"
    return None


def _port(value: object) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        return f"must be an integer from 0 to 65535, got {_show(value)}"
    return None


def _non_empty(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return f"must be a non-empty string, got {_show(value)}"
    return None


def _storage(value: object) -> str | None:
    """``memory``, a file path, or a PostgreSQL URL; any other ``scheme://`` is refused,
    so a mistyped URL never silently becomes a SQLite file named after it."""
    problem = _non_empty(value)
    if problem is not None:
        return problem
    assert isinstance(value, str)
    scheme = _SCHEME.match(value)
    if scheme is not None and not value.lower().startswith(POSTGRES_SCHEMES):
        return f"unknown scheme {scheme.group(0)!r}: must be {STORAGE_KINDS}"
    return None


def _lease_ttl(value: object) -> str | None:
    number = _finite(value)
    if number is None or not 0.5 <= number <= 600:
        return f"must be a number of seconds from 0.5 to 600, got {_show(value)}"
    return None


def _advertise(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if value and not re.fullmatch(r"https?://[^/?#\s]+", value):
        return f"must be empty or an http(s)://host:port URL with no path, got {_show(value)}"
    return None


def _node_id(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if value and not re.fullmatch(r"[A-Za-z0-9._:-]{1,100}", value):
        return f"must be up to 100 letters, digits or . _ : -, got {_show(value)}"
    return None


def _log_level(value: object) -> str | None:
    if value not in LOG_LEVELS:
        return f"must be one of {', '.join(LOG_LEVELS)}, got {_show(value)}"
    return None


def _log_format(value: object) -> str | None:
    if value not in LOG_FORMATS:
        return f"must be one of {', '.join(LOG_FORMATS)}, got {_show(value)}"
    return None


ON_OFF = ("on", "off")


def _on_off(value: object) -> str | None:
    if value not in ON_OFF:
        return f"must be 'on' or 'off', got {_show(value)}"
    return None


def _optional_path(value: object) -> str | None:
    if not isinstance(value, str):
        return f"must be a file path (or empty for none), got {_show(value)}"
    return None


def _admin_token(value: object) -> str | None:
    """Empty (admin view off), or a secret of visible ASCII characters (it travels in an
    ``Authorization`` header), not too short. The value itself never appears in a message."""
    if not isinstance(value, str):
        return "must be a string"
    if value and (len(value) < MIN_ADMIN_TOKEN or not all("!" <= c <= "~" for c in value)):
        return f"must be at least {MIN_ADMIN_TOKEN} visible ASCII characters, no spaces"
    return None


def _application(value: object) -> str | None:
    """``MODULE:NAME`` (a dotted module path, then a name); it is imported at start-up."""
    if not isinstance(value, str) or not _APPLICATION.fullmatch(value):
        return f"must be MODULE:NAME, got {_show(value)}"
    return None


def _admission(value: object) -> str | None:
    """Empty (anyone may open a session), ``secret:S``, ``jwt:hmac:S``, ``jwt:key:PATH`` or
    ``jwt:jwks:PATH`` (admission.py). The secret itself never appears in a message."""
    if not isinstance(value, str):
        return "must be a string"
    try:
        parse_spec(value)
    except AdmissionError as err:
        return str(err)
    return None


def _origins(value: object) -> str | None:
    if not isinstance(value, tuple) or not value:
        return f"must be '*' or a non-empty list of origins, got {_show(value)}"
    if "*" in value:
        return None if value == ("*",) else "'*' cannot be combined with other origins"
    for origin in value:
        if not isinstance(origin, str) or not (origin == "null" or _ORIGIN.fullmatch(origin)):
            return f"{_show(origin)} is not an origin like https://example.com (no path, no slash)"
    return None


def _uris(schemes: tuple[str, ...]) -> Check:
    def check(value: object) -> str | None:
        if not isinstance(value, tuple):
            return f"must be a comma-separated list of URIs, got {_show(value)}"
        for uri in value:
            problem = uri_problem(uri, schemes)
            if problem is not None:
                return problem
        return None

    return check


def _turn_secret(value: object) -> str | None:
    """Empty (no TURN), or a secret of visible ASCII characters; never shown."""
    if not isinstance(value, str):
        return "must be a string"
    if value and (len(value) < MIN_TURN_SECRET or not all("!" <= c <= "~" for c in value)):
        return f"must be at least {MIN_TURN_SECRET} visible ASCII characters, no spaces"
    return None


def _turn_ttl(value: object) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_TTL:
        return f"must be an integer from 1 to {MAX_TTL}, got {_show(value)}"
    return None


def _claim_name(value: object) -> str | None:
    if not isinstance(value, str) or not value or not all("!" <= c <= "~" for c in value):
        return f"must be a claim name of visible ASCII characters, got {_show(value)}"
    return None


def _optional_text(value: object) -> str | None:
    if not isinstance(value, str):
        return f"must be a string (empty: not checked), got {_show(value)}"
    return None


def _non_negative(value: object) -> str | None:
    number = _finite(value)
    if number is None or number < 0:
        return f"must be a number of at least 0, got {_show(value)}"
    return None


# --- parsers: text from a flag or the environment to a value ----------------------------------


def _parse_int(text: str) -> int:
    try:
        if _INT.fullmatch(text.strip()):
            return int(text)
    except ValueError:  # more digits than int() accepts
        pass
    raise ConfigError(f"must be an integer, got {_show(text)}")


def _parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"must be a number, got {_show(text)}") from None


def _parse_str(text: str) -> str:
    return text


def _parse_stripped(text: str) -> str:
    return text.strip()


def _parse_lower(text: str) -> str:
    return text.strip().lower()


def _parse_origins(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _validator(check: Check) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def validate(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        problem = check(value)
        if problem is not None:
            raise ConfigError(f"{attribute.name}: {problem}")

    return validate


def redact_url(value: str) -> str:
    """A URL with the password of its user part replaced by ``***`` (for logs and reprs)."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):[^@/]*@", r"\1:***@", value)


def _setting(
    default: Any,
    check: Check,
    parse: Parse,
    help: str,
    metavar: str = "N",
    *,
    secret: bool = False,
    shown: Callable[[Any], str] | None = None,
) -> Any:
    """An attrs field carrying its own check, text parser, help line and placeholder; a
    ``secret`` one is left out of the ``Config`` repr, so logging a config never shows it,
    and ``shown`` masks part of a value in the repr."""
    meta = {"check": check, "parse": parse, "help": help, "metavar": metavar}
    shown_as: bool | Callable[[Any], str] = not secret if shown is None else shown
    return attrs.field(default=default, validator=_validator(check), metadata=meta, repr=shown_as)


@attrs.frozen(kw_only=True)
class Config:
    """Every setting of a roomkeeper server, with defaults that work on a fresh machine."""

    host: str = _setting("127.0.0.1", _non_empty, _parse_stripped, "address to listen on", "ADDR")
    port: int = _setting(
        8787, _port, _parse_int, "TCP port to listen on (0: any free port)", "PORT"
    )
    heartbeat: float = _setting(
        10.0, _positive, _parse_float, "seconds between heartbeats", "SECONDS"
    )
    grace: float = _setting(
        30.0, _positive, _parse_float, "seconds a session outlives its dropped stream", "SECONDS"
    )
    rate_burst: float = _setting(
        200.0, _at_least_one, _parse_float, "signals a session may send at once"
    )
    rate_refill: float = _setting(
        50.0, _positive, _parse_float, "signals per second a session's budget regains"
    )
    hibernate_after: float = _setting(
        10.0,
        _positive,
        _parse_float,
        "idle seconds before a room is dropped from memory",
        "SECONDS",
    )
    storage: str = _setting(
        attrs.Factory(default_storage),
        _storage,
        _parse_str,
        f"SQLite file for room state, '{MEMORY}' to keep it in memory, or a postgresql:// URL"
        " shared by several nodes (docs/scaling.md; prefer the environment variable when the"
        " URL holds a password)",
        "PATH|URL",
        shown=lambda value: repr(redact_url(value)),
    )
    cors_origins: tuple[str, ...] = _setting(
        ("*",), _origins, _parse_origins, "comma-separated allowed origins, or '*'", "ORIGINS"
    )
    log_level: str = _setting(
        "info", _log_level, _parse_lower, "one of " + ", ".join(LOG_LEVELS), "LEVEL"
    )
    queue_limit: int = _setting(
        256, _positive_int, _parse_int, "signals held per session while it reconnects"
    )
    mailbox_size: int = _setting(1024, _positive_int, _parse_int, "messages an actor may queue")
    max_body: int = _setting(
        MAX_BODY, _positive_int, _parse_int, "largest POST body in bytes", "BYTES"
    )
    retry_ms: int = _setting(
        2000, _positive_int, _parse_int, "reconnect delay sent to clients as SSE retry:", "MS"
    )
    log_format: str = _setting(
        "text",
        _log_format,
        _parse_lower,
        "log lines as 'text' or 'json' (one object a line)",
        "FMT",
    )
    trace: str = _setting(
        "",
        _optional_path,
        _parse_stripped,
        "write the runtime's lifecycle trace (JSON lines) to this file; empty: no trace",
        "FILE",
    )
    admin_token: str = _setting(
        "",
        _admin_token,
        _parse_stripped,
        "bearer token for the /admin/ view (prefer the environment variable; empty: no admin view)",
        "TOKEN",
        secret=True,
    )
    # -- hardening (docs/reliability.md) ----------------------------------------------------
    keep_alive_timeout: float = _setting(
        5.0,
        _positive,
        _parse_float,
        "seconds a connection may sit idle; a request's headers must arrive within it too",
        "SECONDS",
    )
    body_timeout: float = _setting(
        10.0,
        _positive,
        _parse_float,
        "seconds a POST body may take to arrive (else 408)",
        "SECONDS",
    )
    send_timeout: float = _setting(
        20.0,
        _positive,
        _parse_float,
        "seconds sent data may wait unread by a client before its connection is cut",
        "SECONDS",
    )
    stream_buffer: int = _setting(
        1 << 20,
        _positive_int,
        _parse_int,
        "bytes of events held for a stream that reads too slowly; then it ends",
        "BYTES",
    )
    max_peers: int = _setting(
        64, _positive_int, _parse_int, "sessions one room may hold (else 409)"
    )
    new_sessions_per_minute: float = _setting(
        60.0, _positive, _parse_float, "new sessions one client address may open per minute"
    )
    new_sessions_burst: float = _setting(
        30.0, _at_least_one, _parse_float, "new sessions one client address may open at once"
    )
    streams_per_address: int = _setting(
        200, _positive_int, _parse_int, "event streams one client address may hold open"
    )
    trust_proxy: int = _setting(
        0,
        _non_negative_int,
        _parse_int,
        "reverse proxies in front whose X-Forwarded-For gives the client address (0: none)",
    )
    session_bytes: int = _setting(
        2 << 20,
        _positive_int,
        _parse_int,
        "bytes of signals kept per session (replay history and queue); oldest history first out",
        "BYTES",
    )
    room_bytes: int = _setting(
        16 << 20,
        _positive_int,
        _parse_int,
        "bytes of signals kept per room; oldest history first out",
        "BYTES",
    )
    durable_signals: str = _setting(
        "on",
        _on_off,
        _parse_lower,
        "'on': each signal's replay history entry is committed before its 200 (a kill -9 "
        "loses no acknowledged signal); 'off': saved only at hibernation and shutdown",
        "ON|OFF",
    )
    gc_freeze: str = _setting(
        "on",
        _on_off,
        _parse_lower,
        "'on': what survives the cyclic collector's full collections is frozen, and all of "
        f"it rescanned only once the heap has grown {REGROWTH}-fold, the youngest generation "
        f"collected every {YOUNG:,} allocations (`roomkeeper serve` only: an embedded server "
        "leaves its host's collector alone); 'off': CPython's own",
        "ON|OFF",
    )
    memory_budget: int = _setting(
        attrs.Factory(default_memory_budget),
        _positive_int,
        _parse_int,
        "bytes of signals all rooms may hold; near it new sessions get 503 "
        "(default: a quarter of the machine's memory, at most 1 GiB)",
        "BYTES",
    )
    admission: str = _setting(
        "",
        _admission,
        _parse_stripped,
        "who may make a new session: 'secret:S', 'jwt:hmac:S', 'jwt:key:PEM' or "
        "'jwt:jwks:FILE' (a ticket in ?ticket= or X-Roomkeeper-Ticket); empty: anyone",
        "SPEC",
        secret=True,
    )
    application: str = _setting(
        DEFAULT_APPLICATION,
        _application,
        _parse_stripped,
        "the actors that answer the API: MODULE:NAME of a roomkeeper.application.Application",
        "MODULE:NAME",
    )

    # -- several nodes on one PostgreSQL (docs/scaling.md) ----------------------------------
    advertise: str = _setting(
        "",
        _advertise,
        _parse_stripped,
        "URL other nodes reach this one at (empty: http://HOST:PORT as bound)",
        "URL",
    )
    node_id: str = _setting(
        "",
        _node_id,
        _parse_stripped,
        "this node's name in leases and X-Roomkeeper-Node (empty: host name and port)",
        "NAME",
    )
    lease_ttl: float = _setting(
        10.0,
        _lease_ttl,
        _parse_float,
        "seconds a node's hold on a room lasts unless renewed (failover takes about this)",
        "SECONDS",
    )

    @property
    def clustered(self) -> bool:
        """True when room state lives in PostgreSQL, shared with other nodes."""
        return self.storage.lower().startswith(POSTGRES_SCHEMES)

    @property
    def in_memory(self) -> bool:
        """True when room state lives only in memory (storage is the literal `memory`)."""
        return self.storage == MEMORY

    # -- ICE servers and JWT admission (issue 13; docs/operations.md#turn-with-coturn and
    # #admission-by-jwt). Cross-checks are in __attrs_post_init__. ----------------------
    stun_uris: tuple[str, ...] = _setting(
        (), _uris(STUN_SCHEMES), parse_uris, "comma-separated stun: URIs for clients", "URIS"
    )
    turn_uris: tuple[str, ...] = _setting(
        (),
        _uris(TURN_SCHEMES),
        parse_uris,
        "comma-separated turn:/turns: URIs for clients; needs --turn-secret",
        "URIS",
    )
    turn_secret: str = _setting(
        "",
        _turn_secret,
        _parse_stripped,
        "coturn's static-auth-secret, to make TURN credentials (prefer the environment variable)",
        "SECRET",
        secret=True,
    )
    turn_ttl: int = _setting(
        3600,
        _turn_ttl,
        _parse_int,
        f"seconds TURN credentials stay valid (at most {MAX_TTL})",
        "SECONDS",
    )
    admission_room_claim: str = _setting(
        "room", _claim_name, _parse_stripped, "the JWT claim that names the room", "CLAIM"
    )
    admission_audience: str = _setting(
        "", _optional_text, _parse_stripped, "the aud a JWT ticket must name; empty: none", "AUD"
    )
    admission_issuer: str = _setting(
        "", _optional_text, _parse_stripped, "the iss a JWT ticket must name; empty: any", "ISS"
    )
    admission_leeway: float = _setting(
        30.0,
        _non_negative,
        _parse_float,
        "seconds of clock skew allowed on a JWT's exp, nbf and iat",
        "SECONDS",
    )

    def __attrs_post_init__(self) -> None:
        if self.turn_uris and not self.turn_secret:
            raise ConfigError(
                "--turn-uris needs the TURN secret: set ROOMKEEPER_TURN_SECRET (or "
                "--turn-secret) to coturn's static-auth-secret"
            )
        jwt = self.admission.startswith("jwt:")
        for name in ("admission_audience", "admission_issuer"):
            if getattr(self, name) and not jwt:
                raise ConfigError(f"{flag_name(name)} applies only to --admission jwt:...")

    @property
    def ice_servers(self) -> IceServers:
        """The STUN and TURN servers handed to clients, with the TURN secret."""
        return IceServers(self.stun_uris, self.turn_uris, self.turn_secret, self.turn_ttl)

    @property
    def jwt_rules(self) -> JwtRules:
        """What JWT tickets must say besides their signature."""
        return JwtRules(
            room_claim=self.admission_room_claim,
            audience=self.admission_audience or None,
            issuer=self.admission_issuer or None,
            leeway=self.admission_leeway,
        )


def flag_name(name: str) -> str:
    """The command-line flag of a setting: `rate_burst` -> `--rate-burst`."""
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    """The environment variable of a setting: `rate_burst` -> `ROOMKEEPER_RATE_BURST`."""
    return ENV_PREFIX + name.upper()


def _read(field: attrs.Attribute[Any], text: str, label: str) -> Any:
    try:
        value = field.metadata["parse"](text)
        problem = field.metadata["check"](value)
    except ConfigError as err:
        raise ConfigError(f"{label}: {err}") from None
    if problem is not None:
        raise ConfigError(f"{label}: {problem}")
    return value


def config_from_sources(flags: Mapping[str, str | None], environ: Mapping[str, str]) -> Config:
    """Build a `Config` from flag texts (by setting name; None = not given) and an environment.

    A flag wins over `ROOMKEEPER_<NAME>`, which wins over the default; an empty variable
    counts as unset. Raises `ConfigError` naming the flag or variable at fault.
    """
    values: dict[str, Any] = {}
    for field in attrs.fields(Config):
        flag = flags.get(field.name)
        env = environ.get(env_name(field.name), "")
        if flag is not None:
            values[field.name] = _read(field, flag, flag_name(field.name))
        elif env != "":
            values[field.name] = _read(field, env, env_name(field.name))
    if "storage" not in values:
        values["storage"] = default_storage(environ)
    return Config(**values)
