"""Structured logs: one event a line, as readable text or as JSON, with request ids.

Every record may carry extra fields (``log.info("...", extra={"actor": ...})``); both
formats show them. The id of the HTTP request being served, if any, is added to every
record logged while serving it. Nothing here ever reads a request's query or body, so a
token can reach a log line only if some caller put it in the message itself.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

import orjson

__all__ = [
    "JsonFormatter",
    "RequestIdFilter",
    "TextFormatter",
    "new_request_id",
    "request_id_var",
    "sane_request_id",
    "setup_logging",
]

request_id_var: ContextVar[str | None] = ContextVar("roomkeeper_request_id", default=None)
"""The id of the HTTP request the current task serves (each request has its own task)."""

_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

# Attributes every LogRecord has; anything else on a record came in through ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def sane_request_id(value: str | None) -> str | None:
    """An incoming ``X-Request-Id`` if it is safe to log and echo (1 to 128 characters of
    letters, digits and ``._:-``, starting with a letter or digit), else None."""
    if value is not None and _REQUEST_ID.fullmatch(value):
        return value
    return None


def new_request_id() -> str:
    """A fresh request id: 32 random hex digits."""
    return os.urandom(16).hex()


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to records logged while an HTTP request is being served."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            rid = request_id_var.get()
            if rid is not None:
                record.request_id = rid
        return True


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a record got beyond the standard ones, in the order they were given."""
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


def _iso(created: float) -> str:
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts``, ``level``, ``logger``, ``msg``, the extra fields,
    and ``exc`` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(out, default=str).decode()
        except TypeError:  # an int beyond 64 bits, say: the standard library takes it
            return json.dumps(out, default=str, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``time LEVEL logger message key=value ...``: for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = extra_fields(record)
        if not extras:
            return line
        head, sep, tail = line.partition("\n")  # keep a traceback below the fields
        fields = " ".join(f"{k}={_text(v)}" for k, v in extras.items())
        return f"{head} {fields}{sep}{tail}"


def _text(value: Any) -> str:
    text = str(value)
    return repr(text) if (not text or " " in text or "=" in text) else text


def setup_logging(level: str, fmt: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record at ``level`` or above to ``stream`` (stderr) in ``fmt``
    (``text`` or ``json``), replacing the root logger's handlers; the handler made."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    return handler
