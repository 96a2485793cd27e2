"""JSON in and out: orjson on the fast path, the standard library for integers beyond 64
bits (which orjson refuses and Python holds exactly), so payloads pass through unchanged."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

BIG_INT = re.compile(rb"[\[,:][ \t\r\n]*-?[0-9]{19,}(?![0-9.eE])")
"""A number of 19 digits or more after ``[``, ``,`` or ``:``: it may be beyond 64 bits,
which orjson silently reads as a float, so such text is read by the stdlib instead."""


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
