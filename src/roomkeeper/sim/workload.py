"""Workload files: what the simulated peers do, as TOML or JSON, with defaults and checks.

Every setting has a default (``DEFAULTS``); a file overrides some, and ``--set KEY=VALUE``
overrides those. Times are seconds unless a name says otherwise (``hours``, ``_ms``).
A random quantity is a number (a constant) or a table naming its distribution::

    {dist = "exponential", mean = 3}
    {dist = "lognormal", median = 600, sigma = 0.8}
    {dist = "uniform", low = 4, high = 12}
    {dist = "choice", values = [2, 3, 4], weights = [70, 20, 10]}
"""

from __future__ import annotations

import copy
import json
import math
import random
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

__all__ = ["DEFAULTS", "Dist", "Workload", "WorkloadError", "load_workload", "parse_override"]


class WorkloadError(ValueError):
    """A workload file or override is unreadable or names a bad value."""


DEFAULTS: dict[str, Any] = {
    "name": "",
    "rooms": 100,
    "hours": 1.0,
    "arrival": {"per_hour": 0.0, "profile": []},
    "room": {"size": 2, "join_spread": {"dist": "exponential", "mean": 10.0}},
    "session": {
        "length": {"dist": "lognormal", "median": 600.0, "sigma": 0.8},
        "leave_probability": 0.8,
        "renegotiate_per_hour": 0.0,
    },
    "signals": {"ice": 8, "ice_gap": 0.05, "ice_restart": True},
    "drop": {
        "probability": 0.05,
        "reconnect_delay": {"dist": "exponential", "mean": 3.0},
        "last_event_id_only": 0.25,
    },
    "network": {"latency": 0.0},
    "runtime": {
        "hibernate_after": 10.0,
        "grace": 30.0,
        "heartbeat": 60.0,
        "mailbox_size": 1024,
        "queue_limit": 256,
    },
    "storage": {"load_ms": 0.0, "commit_ms": 0.0},
}
"""Every setting and its default. ``arrival.per_hour = 0`` means "exactly ``rooms`` rooms
over ``hours``"; an empty ``arrival.profile`` means a constant rate."""

_DISTS = {
    "constant": ("value",),
    "exponential": ("mean",),
    "lognormal": ("median", "sigma"),
    "uniform": ("low", "high"),
    "choice": ("values", "weights"),
}


@attrs.frozen
class Dist:
    """A random quantity: ``draw(rng)`` gives one value (never negative)."""

    kind: str
    params: tuple[float, ...] = ()
    values: tuple[float, ...] = ()

    def draw(self, rng: random.Random) -> float:
        kind, p = self.kind, self.params
        if kind == "constant":
            return p[0]
        if kind == "exponential":
            return rng.expovariate(1.0 / p[0]) if p[0] > 0 else 0.0
        if kind == "lognormal":
            return rng.lognormvariate(math.log(p[0]), p[1])
        if kind == "uniform":
            return rng.uniform(p[0], p[1])
        return rng.choices(self.values, weights=p)[0]

    def count(self, rng: random.Random) -> int:
        """A draw rounded to a whole number, for counts."""
        return round(self.draw(rng))


@attrs.frozen
class Workload:
    """A parsed, checked workload. ``settings`` is the full resolved table (for records)."""

    name: str
    rooms: int
    hours: float
    per_hour: float
    profile: tuple[float, ...]
    room_size: Dist
    join_spread: Dist
    session_length: Dist
    leave_probability: float
    renegotiate_per_hour: float
    ice: Dist
    ice_gap: Dist
    ice_restart: bool
    drop_probability: float
    reconnect_delay: Dist
    last_event_id_only: float
    latency: Dist
    hibernate_after: float
    grace: float
    heartbeat: float
    mailbox_size: int
    queue_limit: int
    load_ms: float
    commit_ms: float
    settings: dict[str, Any] = attrs.field(eq=False, repr=False)


def load_workload(path: str | Path, overrides: Sequence[str] = ()) -> Workload:
    """Read a ``.toml`` or ``.json`` workload, apply ``KEY=VALUE`` overrides, check it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WorkloadError(f"cannot read workload {path}: {exc.strerror or exc}") from exc
    try:
        if path.suffix.lower() == ".json":
            table = json.loads(raw)
        else:
            table = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"workload {path} is not valid {_format(path)}: {exc}") from exc
    if not isinstance(table, dict):
        raise WorkloadError(f"workload {path}: the top level must be a table")
    settings = _merge(DEFAULTS, table, "")
    for item in overrides:
        key, value = parse_override(item)
        _set(settings, key, value)
    if not settings["name"]:
        settings["name"] = path.stem
    return build(settings)


def parse_override(item: str) -> tuple[str, Any]:
    """``section.key=VALUE``; the value is read as TOML (``1``, ``true``, ``{...}``), and
    as a plain string if it is not valid TOML."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise WorkloadError(f"--set wants KEY=VALUE, got {item!r}")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return key.strip(), value


def build(settings: dict[str, Any]) -> Workload:
    """A ``Workload`` from a full settings table (``DEFAULTS`` merged with a file)."""
    s = settings
    arrival, room, session = s["arrival"], s["room"], s["session"]
    signals, drop, runtime, storage = s["signals"], s["drop"], s["runtime"], s["storage"]
    profile = s["arrival"]["profile"]
    if not isinstance(profile, list) or not all(_number(w) and w >= 0 for w in profile):
        raise WorkloadError("arrival.profile: must be a list of non-negative numbers")
    if profile and not sum(profile) > 0:
        raise WorkloadError("arrival.profile: needs at least one positive weight")
    return Workload(
        name=str(s["name"]),
        rooms=_int(s["rooms"], "rooms", 1),
        hours=_num(s["hours"], "hours", positive=True),
        per_hour=_num(arrival["per_hour"], "arrival.per_hour"),
        profile=tuple(float(w) for w in profile),
        room_size=_dist(room["size"], "room.size", at_least=1),
        join_spread=_dist(room["join_spread"], "room.join_spread"),
        session_length=_dist(session["length"], "session.length"),
        leave_probability=_probability(session["leave_probability"], "session.leave_probability"),
        renegotiate_per_hour=_num(session["renegotiate_per_hour"], "session.renegotiate_per_hour"),
        ice=_dist(signals["ice"], "signals.ice"),
        ice_gap=_dist(signals["ice_gap"], "signals.ice_gap"),
        ice_restart=_bool(signals["ice_restart"], "signals.ice_restart"),
        drop_probability=_probability(drop["probability"], "drop.probability"),
        reconnect_delay=_dist(drop["reconnect_delay"], "drop.reconnect_delay"),
        last_event_id_only=_probability(drop["last_event_id_only"], "drop.last_event_id_only"),
        latency=_dist(s["network"]["latency"], "network.latency"),
        hibernate_after=_num(runtime["hibernate_after"], "runtime.hibernate_after", positive=True),
        grace=_num(runtime["grace"], "runtime.grace"),
        heartbeat=_num(runtime["heartbeat"], "runtime.heartbeat", positive=True),
        mailbox_size=_int(runtime["mailbox_size"], "runtime.mailbox_size", 1),
        queue_limit=_int(runtime["queue_limit"], "runtime.queue_limit", 0),
        load_ms=_num(storage["load_ms"], "storage.load_ms"),
        commit_ms=_num(storage["commit_ms"], "storage.commit_ms"),
        settings=settings,
    )


# -- merging ----------------------------------------------------------------------------
def _format(path: Path) -> str:
    return "JSON" if path.suffix.lower() == ".json" else "TOML"


def _merge(defaults: Mapping[str, Any], given: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``defaults`` updated by ``given``; unknown keys are errors. Sections merge key by
    key; a distribution table replaces the default value whole."""
    out = copy.deepcopy(dict(defaults))
    for key, value in given.items():
        name = f"{where}{key}"
        if key not in defaults:
            known = ", ".join(sorted(defaults))
            raise WorkloadError(f"unknown setting {name!r} (known here: {known})")
        if _is_section(defaults[key]):
            if not isinstance(value, dict):
                raise WorkloadError(f"{name}: must be a table")
            out[key] = _merge(defaults[key], value, f"{name}.")
        else:
            out[key] = value
    return out


def _is_section(value: Any) -> bool:
    return isinstance(value, dict) and "dist" not in value


def _set(settings: dict[str, Any], key: str, value: Any) -> None:
    *sections, last = key.split(".")
    table: Any = settings
    for i, part in enumerate(sections):
        table = table.get(part) if _is_section(table) else None
        if not _is_section(table):
            raise WorkloadError(f"--set {key}: {'.'.join(sections[: i + 1])} is not a section")
    if last not in table:
        raise WorkloadError(f"--set {key}: unknown setting")
    if _is_section(table[last]):
        raise WorkloadError(f"--set {key}: is a section; set one of its keys")
    table[last] = value


# -- checks -----------------------------------------------------------------------------
def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: Any, name: str, *, positive: bool = False) -> float:
    if not _number(value) or value < 0 or (positive and value == 0):
        want = "a positive number" if positive else "a non-negative number"
        raise WorkloadError(f"{name}: must be {want}, got {value!r}")
    return float(value)


def _int(value: Any, name: str, least: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise WorkloadError(f"{name}: must be a whole number of at least {least}, got {value!r}")
    return value


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise WorkloadError(f"{name}: must be true or false, got {value!r}")
    return value


def _probability(value: Any, name: str) -> float:
    if not _number(value) or not 0 <= value <= 1:
        raise WorkloadError(f"{name}: must be a probability from 0 to 1, got {value!r}")
    return float(value)


def _dist(value: Any, name: str, *, at_least: float = 0.0) -> Dist:
    """A distribution from a number or a ``{dist = ...}`` table; its support must lie at
    or above ``at_least``."""
    if _number(value):
        value = {"dist": "constant", "value": value}
    if not isinstance(value, dict) or value.get("dist") not in _DISTS:
        kinds = ", ".join(_DISTS)
        raise WorkloadError(f"{name}: must be a number or a table with dist = one of {kinds}")
    kind = value["dist"]
    want = _DISTS[kind]
    if sorted(value) != sorted(("dist", *want)):
        raise WorkloadError(f"{name}: a {kind} distribution takes {', '.join(want)}")
    if kind == "choice":
        values, weights = value["values"], value["weights"]
        ok = isinstance(values, list) and isinstance(weights, list) and len(values) > 0
        ok = ok and len(values) == len(weights) and all(map(_number, [*values, *weights]))
        if not ok or min(values) < at_least or min(weights) < 0 or not sum(weights) > 0:
            raise WorkloadError(
                f"{name}: choice wants equally long lists of values (>= {at_least:g}) and "
                "non-negative weights, some positive"
            )
        return Dist(kind, tuple(float(w) for w in weights), tuple(float(v) for v in values))
    params = tuple(value[p] for p in want)
    if not all(_number(p) and p >= 0 for p in params):
        raise WorkloadError(f"{name}: {', '.join(want)} must be non-negative numbers")
    if kind == "lognormal" and params[0] <= 0:
        raise WorkloadError(f"{name}: a lognormal median must be positive")
    if kind == "uniform" and params[0] > params[1]:
        raise WorkloadError(f"{name}: uniform low must not exceed high")
    smallest = params[0] if kind in ("constant", "uniform") else 0.0  # the others reach 0
    if smallest < at_least:
        raise WorkloadError(f"{name}: every value must be at least {at_least:g}")
    return Dist(kind, tuple(float(p) for p in params))
