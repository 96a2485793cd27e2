"""Structured logs: the JSON and text formats, request ids, and setup."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from roomkeeper.observe.logs import (
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    new_request_id,
    request_id_var,
    sane_request_id,
    setup_logging,
)

HEX32 = re.compile(r"[0-9a-f]{32}")  # 32 lowercase hex digits, nothing else


def record(msg: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("roomkeeper.test", logging.INFO, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def test_json_has_the_fixed_fields_then_the_extras() -> None:
    line = JsonFormatter().format(record("hello %s", "world", actor="rooms:abc", took=0.5))
    data = json.loads(line)
    assert list(data)[:4] == ["ts", "level", "logger", "msg"]
    assert data["level"] == "info"
    assert data["logger"] == "roomkeeper.test"
    assert data["msg"] == "hello world"
    assert data["ts"].endswith("Z") and "T" in data["ts"]
    assert (data["actor"], data["took"]) == ("rooms:abc", 0.5)
    assert "\n" not in line


def test_json_carries_tracebacks_and_odd_values_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), __import__("sys").exc_info()
        )
    rec.big = 10**30  # beyond 64 bits: orjson refuses, the fallback takes it
    rec.obj = object()
    line = JsonFormatter().format(rec)
    data = json.loads(line)
    assert "ValueError: boom" in data["exc"]
    assert data["big"] == 10**30
    assert data["obj"].startswith("<object")
    assert "\n" not in line


def test_text_is_readable_with_extras_as_key_value() -> None:
    line = TextFormatter().format(record("GET %s", "/metrics", route="/metrics", status=200))
    assert " INFO roomkeeper.test GET /metrics route=/metrics status=200" in line
    spaced = TextFormatter().format(record("x", reason="two words"))
    assert "reason='two words'" in spaced


def test_request_id_filter_reads_the_context() -> None:
    rec = record()
    RequestIdFilter().filter(rec)
    assert not hasattr(rec, "request_id")
    token = request_id_var.set("req-1")
    try:
        rec = record()
        RequestIdFilter().filter(rec)
        assert rec.request_id == "req-1"  # type: ignore[attr-defined]
    finally:
        request_id_var.reset(token)


@pytest.mark.parametrize(
    "value",
    ["abc", "0f9c2b8e-1a2b-4c3d-8e9f-0123456789ab", "trace:1.2_3-4", "a" * 128],
)
def test_sane_request_ids_are_kept(value: str) -> None:
    assert sane_request_id(value) == value


@pytest.mark.parametrize(
    "value", [None, "", "a" * 129, "has space", "new\nline", "-leading", 'quote"', "é"]
)
def test_other_request_ids_are_replaced(value: str | None) -> None:
    assert sane_request_id(value) is None


def test_new_request_ids_are_unique_hex() -> None:
    ids = {new_request_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(HEX32.fullmatch(i) for i in ids), ids


@pytest.mark.usefixtures("restore_root")
def test_setup_logging_json_to_a_stream() -> None:
    out = io.StringIO()
    setup_logging("debug", "json", out)
    logging.getLogger("roomkeeper.x").debug("one", extra={"k": 1})
    logging.getLogger("other").info("two")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(d["msg"], d["level"]) for d in lines] == [("one", "debug"), ("two", "info")]
    assert lines[0]["k"] == 1
    assert len(logging.getLogger().handlers) == 1


@pytest.mark.usefixtures("restore_root")
def test_setup_logging_level_and_text() -> None:
    out = io.StringIO()
    setup_logging("warning", "text", out)
    logging.getLogger("roomkeeper.x").info("hidden")
    logging.getLogger("roomkeeper.x").warning("shown")
    assert "hidden" not in out.getvalue()
    assert "WARNING roomkeeper.x shown" in out.getvalue()
