"""SSE framing: events, preamble, comments and headers."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomkeeper.http.sse import SSE_HEADERS, comment, encode_event, retry_preamble, sse_headers


def test_encode_event_exact_bytes() -> None:
    data = b'{"from":"a","signal":{"type":"offer"}}'
    assert encode_event(17, "signal", data) == b"id: 17\nevent: signal\ndata: " + data + b"\n\n"


def test_encode_event_names_and_big_ids() -> None:
    big = 2**80 + 3
    assert (
        encode_event(big, "heartbeat", b"{}")
        == f"id: {big}\nevent: heartbeat\ndata: {{}}\n\n".encode()
    )
    assert encode_event(0, "custom-event", b"1") == b"id: 0\nevent: custom-event\ndata: 1\n\n"
    assert encode_event(1, "caf\u00e9", b"1") == "id: 1\nevent: caf\u00e9\ndata: 1\n\n".encode()


@pytest.mark.parametrize("name", ["", "a\nb", "a\rb", ":x"])
def test_encode_event_refuses_bad_names(name: str) -> None:
    with pytest.raises(ValueError):
        encode_event(1, name, b"{}")


@given(
    st.integers(min_value=0),
    st.sampled_from(["session", "roster", "signal", "heartbeat", "bye"]),
    st.text(st.characters(exclude_categories=["Cs"])),
)
def test_events_parse_back(event_id: int, name: str, text: str) -> None:
    """What a client's SSE parser would read: one event, the same id, name and JSON."""
    data = orjson.dumps({"s": text, "n": [1, 2]})
    frame = encode_event(event_id, name, data)
    assert frame.endswith(b"\n\n") and frame.count(b"\n\n") == 1
    lines = frame[:-2].split(b"\n")
    assert b"\r" not in frame
    fields = dict(line.split(b": ", 1) for line in lines)
    assert fields == {b"id": str(event_id).encode(), b"event": name.encode(), b"data": data}


def test_retry_preamble() -> None:
    assert retry_preamble(2000) == b"retry: 2000\n\n"
    assert retry_preamble(0) == b"retry: 0\n\n"


def test_comment() -> None:
    assert comment("keepalive") == b": keepalive\n\n"
    assert comment() == b": \n\n"
    assert comment("a\nb\r\nc") == b": a\n: b\n: c\n\n"
    assert comment("\u00e9") == ": \u00e9\n\n".encode()


def test_headers_constant_is_read_only() -> None:
    assert dict(SSE_HEADERS) == {
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache, no-transform",
        "X-Accel-Buffering": "no",
    }
    with pytest.raises(TypeError):
        SSE_HEADERS["Connection"] = "close"  # type: ignore[index]


@pytest.mark.parametrize("version", ["1.1", "HTTP/1.1", "http/1.1"])
def test_headers_http11_keep_alive(version: str) -> None:
    headers = sse_headers(version)
    assert headers == {**SSE_HEADERS, "Connection": "keep-alive"}


@pytest.mark.parametrize("version", ["2", "HTTP/2", "2.0", "3", "1.0"])
def test_headers_no_connection_elsewhere(version: str) -> None:
    assert sse_headers(version) == dict(SSE_HEADERS)


def test_headers_are_a_fresh_dict() -> None:
    headers = sse_headers("1.1")
    headers["X-Extra"] = "1"
    assert "X-Extra" not in sse_headers("1.1")
