"""Reading a client's JSON: orjson for speed, the stdlib where orjson would change a value.

orjson keeps integers only within 64 bits: it silently reads a larger one as a float,
losing digits (and refuses to write one). When a parsed body holds a float and its text
may hold such an integer, the body is read again by the stdlib `json`, which keeps integers
exact (`roomkeeper.jsonutil.dumps` writes them back). Both readers keep the last of
duplicate keys. orjson refuses NaN, Infinity, numbers beyond the float range (integers of
over 308 digits included) and lone surrogates; roomkeeper also refuses nesting deeper than
`MAX_DEPTH`, since orjson cannot write more than 254 levels and others parsers have limits.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from ..jsonutil import BIG_INT

__all__ = ["MAX_DEPTH", "JsonError", "loads"]

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted; the outermost container is level 1."""

# The same text inside a string only costs a second, still exact, parse.
_BIG_INT = BIG_INT


class JsonError(ValueError):
    """The bytes are not JSON that roomkeeper accepts; the message says why."""


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


def loads(body: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parse one JSON document from UTF-8 bytes; raise JsonError if roomkeeper refuses it."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise JsonError("not valid UTF-8") from None
        raise JsonError(f"not valid JSON: {err}") from None
    if _walk(value, max_depth) and _BIG_INT.search(body):
        # orjson has checked the syntax, the encoding and the depth: only numbers differ.
        value = json.loads(body.decode("utf-8"))
    return value
