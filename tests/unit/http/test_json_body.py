"""Reading JSON bodies: exact integers, refused constants, depth bombs, bad encodings."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomkeeper.http.errors import ApiError
from roomkeeper.http.parsing import parse_json_object
from roomkeeper.jsonutil import MAX_DEPTH, JsonError
from roomkeeper.jsonutil import loads_untrusted as loads


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def reason(body: bytes) -> str:
    with pytest.raises(ApiError) as info:
        parse_json_object(body)
    assert info.value.status == 400
    return info.value.message


def test_plain_object() -> None:
    body = b'{"sender": "a", "signal": {"sdp": "v=0\\r\\n", "n": [1, 2.5, true, null]}}'
    assert parse_json_object(body) == json.loads(body)


@pytest.mark.parametrize(
    "number",
    [
        "18446744073709551616",  # 2**64: orjson would read a float
        "-9223372036854775809",  # -(2**63) - 1
        "123456789012345678901234567890",
        "9" * 300,
        "1" + "0" * 308,  # 10**308: still below the largest float
        "9223372036854775807",
        "18446744073709551615",
    ],
)
def test_big_integers_kept_exact(number: str) -> None:
    body = b'{"signal": {"n": ' + number.encode() + b', "list": [' + number.encode() + b"]}}"
    value = parse_json_object(body)
    assert value["signal"]["n"] == int(number)
    assert value["signal"]["list"] == [int(number)]
    assert isinstance(value["signal"]["n"], int)
    assert dumps(value) == body.replace(b" ", b"")


def test_long_digit_runs_in_strings_are_harmless() -> None:
    body = b'{"sdp": "o=- 4611731400430051336 2 IN IP4", "k": ":12345678901234567890"}'
    assert parse_json_object(body) == json.loads(body)


def test_floats_unchanged_by_either_path() -> None:
    body = b'{"a": 1.5, "b": 1e300, "c": -0.0, "d": 12345678901234567890.5, "e": 1E5}'
    value = parse_json_object(body)
    assert value == json.loads(body)
    big = parse_json_object(body[:-1] + b', "f": 18446744073709551616}')
    assert {k: big[k] for k in value} == value


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b'{"a": 1e400}',  # overflows to infinity
        b'{"a": NaN, "b": 18446744073709551616}',  # the exact path refuses them too
        b'{"a": Infinity, "b": 18446744073709551616}',
        b'{"a": 1e400, "b": 18446744073709551616}',
    ],
)
def test_nan_and_infinity_refused(body: bytes) -> None:
    reason(body)


@pytest.mark.parametrize("digits", [310, 400, 5000])
def test_integers_beyond_the_float_range_are_400(digits: int) -> None:
    """orjson refuses them, and JavaScript would read Infinity: beyond what parsers share."""
    reason(b'{"a": 1' + b"0" * (digits - 1) + b"}")


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"[]", "an array"),
        (b'"x"', "a string"),
        (b"1", "a number"),
        (b"18446744073709551616", "a number"),
        (b"true", "a boolean"),
        (b"null", "null"),
    ],
)
def test_not_an_object(body: bytes, kind: str) -> None:
    assert reason(body) == f"body must be a JSON object, not {kind}"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b" ",
        b"{",
        b"{'a': 1}",
        b'{"a": 1,}',
        b'{"a": 1} {}',
        b'{"a": 1} x',
        b'{"a": "line\nbreak"}',  # raw control character in a string
        b'\xef\xbb\xbf{"a": 1}',  # a byte order mark
        b'{"a": 01}',
        b'{"a": 1, "b": [18446744073709551616,]}',  # the exact path is as strict
    ],
)
def test_invalid_json(body: bytes) -> None:
    assert "not valid JSON" in reason(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": "\xff"}',
        b'{"a": "\xc3"}',
        b'{"a": "\xed\xa0\x80"}',  # an encoded surrogate
        b'{"a": "\xff", "n": 18446744073709551616}',
        '{"a": 1}'.encode("utf-16"),
    ],
)
def test_not_utf8(body: bytes) -> None:
    assert "UTF-8" in reason(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": "\\ud800"}',  # a lone high surrogate escape
        b'{"a": "\\udc00x"}',
        b'{"\\ud800": 1}',
        b'{"a": "\\ud800", "n": 18446744073709551616}',
        b'{"\\ud800": 1, "n": 18446744073709551616}',
        b'{"a": ["\\udfff"], "n": 18446744073709551616}',
    ],
)
def test_lone_surrogate_escapes_refused(body: bytes) -> None:
    reason(body)


def test_surrogate_pairs_accepted() -> None:
    body = b'{"a": "\\ud83c\\udf89", "n": 18446744073709551616}'
    assert parse_json_object(body)["a"] == "\U0001f389"
    assert parse_json_object(b'{"a": "\\ud83c\\udf89"}')["a"] == "\U0001f389"


def test_duplicate_keys_last_wins() -> None:
    """Both readers keep the last value; the server forwards what it parsed."""
    assert parse_json_object(b'{"to": "a", "to": "b"}') == {"to": "b"}
    both = b'{"to": "a", "to": "b", "n": 18446744073709551616}'
    assert parse_json_object(both) == {"to": "b", "n": 2**64}


def nested(depth: int, big: bool = False) -> bytes:
    """An object whose `x` holds arrays, `depth` containers in all."""
    inner = b"18446744073709551616" if big else b"1"
    return b'{"x": ' + b"[" * (depth - 1) + inner + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize("big", [False, True])
def test_depth_limit(big: bool) -> None:
    assert parse_json_object(nested(MAX_DEPTH, big))
    assert "nested deeper than 64" in reason(nested(MAX_DEPTH + 1, big))


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("depth", [300, 1100, 50_000])
def test_depth_bombs_are_400_not_a_crash(depth: int, big: bool) -> None:
    body = nested(depth, big)
    assert len(body) < 102_400
    reason(body)


def test_depth_bomb_of_objects() -> None:
    body = b'{"a":' * 30_000 + b"1" + b"}" * 30_000
    reason(body)
    reason(body[:-30_000] + b', "n": 18446744073709551616' + b"}" * 30_000)


def test_many_shallow_containers_are_fine() -> None:
    body = b'{"x": [' + b",".join([b"[]", b"{}"] * 5000) + b"]}"
    assert len(parse_json_object(body)["x"]) == 10_000


def test_depth_limit_is_a_parameter() -> None:
    assert loads(b"[[1]]", max_depth=2) == [[1]]
    with pytest.raises(JsonError):
        loads(b"[[[1]]]", max_depth=2)


def test_deep_strings_do_not_count_as_levels() -> None:
    body = nested(MAX_DEPTH - 1)[:-1].replace(b"1", b'"s"') + b"}"
    assert parse_json_object(body)


texts = st.text(st.characters(exclude_categories=["Cs"]))  # no lone surrogates
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(texts, json_values, max_size=5))
def test_any_json_object_round_trips(value: dict[str, Any]) -> None:
    assert parse_json_object(json.dumps(value).encode("ascii")) == value
    assert parse_json_object(dumps(value)) == value
    with contextlib.suppress(TypeError):  # orjson cannot write integers beyond 64 bits
        assert parse_json_object(orjson.dumps(value)) == value
