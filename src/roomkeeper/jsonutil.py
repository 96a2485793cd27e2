"""JSON in and out, in one place: orjson for speed, the standard library where orjson
would change a value.

orjson keeps integers only within 64 bits: it silently reads a larger one as a float,
losing digits (and refuses to write one). Text that may hold such an integer is read by
the stdlib `json`, which keeps integers exact, and `dumps` writes them back, so payloads
pass through unchanged.

- `dumps`: compact JSON bytes.
- `loads`: JSON roomkeeper wrote itself (storage, messages).
- `loads_untrusted`: a client's JSON (request bodies). Both readers keep the last of
  duplicate keys. orjson refuses NaN, Infinity, numbers beyond the float range (integers
  of over 308 digits included) and lone surrogates; roomkeeper also refuses nesting
  deeper than `MAX_DEPTH`, since orjson cannot write more than 254 levels and other
  parsers have limits.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

__all__ = ["BIG_INT", "MAX_DEPTH", "JsonError", "dumps", "loads", "loads_untrusted"]

BIG_INT = re.compile(rb"[\[,:][ \t\r\n]*-?[0-9]{19,}(?![0-9.eE])")
"""A number of 19 digits or more after ``[``, ``,`` or ``:``: it may be beyond 64 bits,
which orjson silently reads as a float, so such text is read by the stdlib instead. (The
same text inside a string only costs a second, still exact, parse.)"""

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects a client may send; the outermost is level 1."""


class JsonError(ValueError):
    """The bytes are not JSON that roomkeeper accepts; the message says why."""


def dumps(value: Any) -> bytes:
    """Compact JSON bytes; raises TypeError for what JSON cannot hold."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        try:
            return json.dumps(
                value, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            ).encode()
        except ValueError as exc:
            raise TypeError(str(exc)) from exc


def loads(raw: bytes) -> Any:
    """Parse JSON we wrote ourselves (storage, messages), keeping big integers exact."""
    if BIG_INT.search(raw):
        return json.loads(raw)
    return orjson.loads(raw)


def _walk(value: Any, max_depth: int) -> bool:
    """Check the nesting depth level by level; True if any float was seen."""
    level = [value] if value.__class__ is dict or value.__class__ is list else []
    depth = 0
    has_float = value.__class__ is float
    while level:
        depth += 1
        if depth > max_depth:
            raise JsonError(f"nested deeper than {max_depth} levels")
        below = []
        for node in level:
            for child in node.values() if node.__class__ is dict else node:
                kind = child.__class__
                if kind is dict or kind is list:
                    below.append(child)
                elif kind is float:
                    has_float = True
        level = below
    return has_float


def loads_untrusted(body: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a client's JSON document from UTF-8 bytes; raise JsonError if roomkeeper
    refuses it."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise JsonError("not valid UTF-8") from None
        raise JsonError(f"not valid JSON: {err}") from None
    if _walk(value, max_depth) and BIG_INT.search(body):
        # orjson has checked the syntax, the encoding and the depth: only numbers differ.
        value = json.loads(body.decode("utf-8"))
    return value
