"""Request parsing: query strings, rooms, UUIDs, lengths, credentials and signal fields."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.datastructures import Headers

from roomkeeper.http.errors import ApiError
from roomkeeper.http.parsing import (
    batch_fields,
    bearer,
    body_length,
    check_uuid,
    connect_credentials,
    last_event_id,
    post_credentials,
    room_from,
    signal_fields,
)
from roomkeeper.http.parsing import parse_query as pq
from roomkeeper.jsonutil import loads
from roomkeeper.signaling import MAX_BATCH

S = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"  # a version-1 UUID
T = "6fa459ea-ee8a-4ca4-894e-db77e160355e"  # a version-4 UUID
T2 = "16fd2706-8baf-433b-82eb-8c7fada847da"


def status_of(call: Any, *args: Any) -> int:
    with pytest.raises(ApiError) as info:
        call(*args)
    return info.value.status


# --- parse_query ---------------------------------------------------------------------------


def test_query_plain_and_empty() -> None:
    assert pq(b"") == {}
    assert pq(b"room=a&x=1") == {"room": "a", "x": "1"}
    assert pq(b"&&room=a&") == {"room": "a"}
    assert pq(b"flag&room=") == {"flag": "", "room": ""}


def test_query_percent_and_plus_decoding() -> None:
    assert pq(b"room=a%20b+c%2Bd") == {"room": "a b c+d"}
    assert pq(b"room=%C3%A9t%C3%A9") == {"room": "été"}
    assert pq(b"r%6F%6Fm=x") == {"room": "x"}
    assert pq(b"room=%F0%9F%8E%89") == {"room": "\U0001f389"}
    assert pq(b"room=a%3Db%26c") == {"room": "a=b&c"}  # encoded separators stay data
    assert pq(b"room=a=b") == {"room": "a=b"}


def test_query_malformed_escapes_stay_literal() -> None:
    assert pq(b"room=100%") == {"room": "100%"}
    assert pq(b"room=%zz%4") == {"room": "%zz%4"}


def test_query_raw_utf8_bytes_are_decoded() -> None:
    assert pq("room=café".encode()) == {"room": "café"}


@pytest.mark.parametrize(
    "raw",
    [
        b"room=%FF",  # not UTF-8 at all
        b"room=%C3",  # truncated sequence
        b"room=%C0%AF",  # overlong encoding of '/'
        b"room=%ED%A0%80",  # an encoded UTF-16 surrogate
        b"room=ok&other=%80",  # any parameter, not only room
        b"%FF=x",  # keys too
        b"room=\xff",  # raw, not percent-encoded
    ],
)
def test_query_invalid_utf8_is_400(raw: bytes) -> None:
    assert status_of(pq, raw) == 400


def test_query_first_value_wins() -> None:
    assert pq(b"room=a&room=b&room=c") == {"room": "a"}
    assert pq(b"room=&room=b") == {"room": ""}


@given(st.dictionaries(st.text(min_size=1), st.text()))
def test_query_round_trips_any_text(params: dict[str, str]) -> None:
    from urllib.parse import urlencode

    try:
        raw = urlencode(params).encode("ascii")
    except UnicodeEncodeError:  # lone surrogates cannot be sent
        return
    assert pq(raw) == params


# --- room_from -----------------------------------------------------------------------------


def test_room_ok() -> None:
    assert room_from({"room": "lobby"}) == "lobby"
    assert room_from({"room": " "}) == " "


@pytest.mark.parametrize("query", [{}, {"room": ""}, {"other": "x"}])
def test_room_missing_or_empty_is_400(query: dict[str, str]) -> None:
    assert status_of(room_from, query) == 400


def test_room_limit_counts_utf8_bytes() -> None:
    assert room_from({"room": "a" * 256}) == "a" * 256
    assert status_of(room_from, {"room": "a" * 257}) == 400
    two_byte = "é" * 128  # 256 bytes, 128 characters
    assert room_from({"room": two_byte}) == two_byte
    assert status_of(room_from, {"room": two_byte + "a"}) == 400  # 257 bytes
    four_byte = "\U0001f389" * 64  # 256 bytes in 64 characters
    assert room_from({"room": four_byte}) == four_byte
    assert status_of(room_from, {"room": "\U0001f389" * 65}) == 400


def test_room_from_decoded_query() -> None:
    assert room_from(pq(b"room=" + b"%C3%A9" * 128)) == "é" * 128
    assert status_of(room_from, pq(b"room=" + b"%C3%A9" * 129)) == 400


# --- check_uuid ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        S,
        T,
        T.upper(),
        "00000000-0000-0000-0000-000000000000",  # nil UUID
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "01890a5d-ac96-774b-bcce-b302099a8057",  # version 7
        "6Fa459Ea-EE8a-4cA4-894e-Db77e160355E",
    ],
)
def test_uuid_accepted_and_lowercased(value: str) -> None:
    assert check_uuid(value, "to") == value.lower()


@pytest.mark.parametrize(
    "value",
    [
        "",
        "6fa459eaee8a4ca4894edb77e160355e",  # no hyphens
        "{6fa459ea-ee8a-4ca4-894e-db77e160355e}",  # braces
        "urn:uuid:6fa459ea-ee8a-4ca4-894e-db77e160355e",
        "6fa459ea-ee8a-4ca4-894e-db77e160355",  # short
        "6fa459ea-ee8a-4ca4-894e-db77e160355ef",  # long
        "6fa459e-aee8a-4ca4-894e-db77e160355e",  # hyphens misplaced
        "6fa459ea-ee8a-4ca4-894e-db77e160355g",  # not hex
        " 6fa459ea-ee8a-4ca4-894e-db77e160355e",
        "6fa459ea-ee8a-4ca4-894e-db77e160355e\n",
        "\uff16fa459ea-ee8a-4ca4-894e-db77e160355e",  # a fullwidth digit six
        123,
        ["6fa459ea-ee8a-4ca4-894e-db77e160355e"],
        True,
    ],
)
def test_uuid_rejected(value: object) -> None:
    with pytest.raises(ApiError) as info:
        check_uuid(value, "sender")
    assert info.value.status == 400
    assert "sender" in info.value.message


def test_uuid_missing_names_field() -> None:
    with pytest.raises(ApiError) as info:
        check_uuid(None, "to")
    assert (info.value.status, info.value.message) == (400, "to missing")


@given(st.uuids())
def test_uuid_any_generated(value: uuid.UUID) -> None:
    assert check_uuid(str(value).upper(), "x") == str(value)


# --- body_length ---------------------------------------------------------------------------


def h(**items: str) -> Headers:
    return Headers([(k.replace("_", "-"), v) for k, v in items.items()])


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0), ("1", 1), ("102400", 102400), ("00042", 42), (" 7 ", 7)],
)
def test_length_ok(value: str, expected: int) -> None:
    assert body_length(h(Content_Length=value)) == expected


def test_length_missing_is_411() -> None:
    assert status_of(body_length, Headers()) == 411
    assert status_of(body_length, h(Transfer_Encoding="chunked")) == 411


@pytest.mark.parametrize("value", ["", "-1", "+5", "1.5", "1e3", "abc", "5, 5", "0x10", "١٢"])
def test_length_malformed_is_400(value: str) -> None:
    assert status_of(body_length, h(Content_Length=value)) == 400


@pytest.mark.parametrize("value", ["102401", "999999999999999999999999999999", "1" + "0" * 5000])
def test_length_over_limit_is_413(value: str) -> None:
    assert status_of(body_length, h(Content_Length=value)) == 413


def test_length_custom_limit_and_case_insensitive_lookup() -> None:
    headers = Headers([("content-length", "11")])
    assert body_length(headers, 11) == 11
    assert status_of(body_length, headers, 10) == 413
    assert body_length(Headers([("Content-Length", "000000000000000000010")]), 10) == 10


# --- bearer --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"Bearer {T}", T),
        (f"bearer {T}", T),
        (f"BEARER   {T} ", T),
        ("Bearer anything", "anything"),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer", None),
        (f"Bearer {T} extra", None),
        ("", None),
    ],
)
def test_bearer(value: str, expected: str | None) -> None:
    assert bearer(h(Authorization=value)) == expected


def test_bearer_absent() -> None:
    assert bearer(Headers()) is None
    assert bearer({}) is None  # a plain dict satisfies the protocol too


# --- post_credentials ----------------------------------------------------------------------


def test_credentials_from_each_place() -> None:
    assert post_credentials({"sender": S, "token": T}, Headers()) == (S, T)
    assert post_credentials({"sender": S}, h(X_Token=T)) == (S, T)
    assert post_credentials({"sender": S}, h(Authorization=f"Bearer {T}")) == (S, T)


def test_credentials_agreeing_everywhere() -> None:
    headers = h(X_Token=T, Authorization=f"Bearer {T}")
    assert post_credentials({"sender": S, "token": T}, headers) == (S, T)


def test_credentials_are_lowercased() -> None:
    assert post_credentials({"sender": S.upper(), "token": T.upper()}, Headers()) == (S, T)


@pytest.mark.parametrize(
    ("body_token", "headers"),
    [
        (T, h(X_Token=T2)),
        (T, h(Authorization=f"Bearer {T2}")),
        (None, h(X_Token=T, Authorization=f"Bearer {T2}")),
        (T, h(X_Token=T, Authorization=f"Bearer {T2}")),
        (T, h(X_Token=T2.upper())),
    ],
)
def test_credentials_disagreeing_is_403(body_token: str | None, headers: Headers) -> None:
    body = {"sender": S} if body_token is None else {"sender": S, "token": body_token}
    with pytest.raises(ApiError) as info:
        post_credentials(body, headers)
    assert info.value.status == 403
    assert T not in info.value.message and T2 not in info.value.message


@pytest.mark.parametrize(
    ("body_token", "headers"),
    [
        (T, h(X_Token=T.upper())),
        (T.upper(), h(X_Token=T)),
        (T, h(Authorization=f"Bearer {T.upper()}")),
        (None, h(X_Token=T.upper(), Authorization=f"Bearer {T}")),
        (T.upper(), h(X_Token=T, Authorization=f"Bearer {T.title()}")),
    ],
    ids=["body-vs-x-token", "upper-body", "body-vs-bearer", "x-token-vs-bearer", "all-three"],
)
def test_credentials_agree_whatever_their_case(body_token: str | None, headers: Headers) -> None:
    """UUIDs compare without case (the protocol says so): the same token given in two
    places in different case is one token, and comes back lowercase."""
    body = {"sender": S} if body_token is None else {"sender": S, "token": body_token}
    assert post_credentials(body, headers) == (S, T)


def test_credentials_token_missing_is_400() -> None:
    with pytest.raises(ApiError) as info:
        post_credentials({"sender": S}, Headers())
    assert info.value.status == 400
    assert "token missing" in info.value.message
    assert status_of(post_credentials, {"sender": S, "token": None}, Headers()) == 400
    # an Authorization that is not a bearer token gives no token
    assert status_of(post_credentials, {"sender": S}, h(Authorization="Basic eDp5")) == 400


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ({"token": T}, Headers()),  # sender missing
        ({"sender": "me", "token": T}, Headers()),
        ({"sender": 5, "token": T}, Headers()),
        ({"sender": S, "token": "secret"}, Headers()),
        ({"sender": S, "token": 7}, Headers()),
        ({"sender": S, "token": ""}, Headers()),
        ({"sender": S}, h(X_Token="nope")),
        ({"sender": S}, h(Authorization="Bearer nope")),
        ({"sender": S, "token": "nope"}, h(X_Token=T)),  # 400 comes before 403
    ],
)
def test_credentials_not_uuids_is_400(body: dict[str, Any], headers: Headers) -> None:
    with pytest.raises(ApiError) as info:
        post_credentials(body, headers)
    assert info.value.status == 400
    assert "nope" not in info.value.message and "secret" not in info.value.message


# --- signal_fields -------------------------------------------------------------------------


def test_signal_fields_ok() -> None:
    signal = {"type": "offer", "sdp": "v=0"}
    assert signal_fields({"to": T.upper(), "signal": signal}) == (T, signal, None)
    assert signal_fields({"to": T, "signal": {}, "id": None}) == (T, {}, None)
    assert signal_fields({"to": T, "signal": {}, "id": "x"}) == (T, {}, "x")
    assert signal_fields({"to": T, "signal": {}, "id": "é" * 64}) == (T, {}, "é" * 64)


@pytest.mark.parametrize(
    "body",
    [
        {"signal": {}},
        {"to": "x", "signal": {}},
        {"to": T},
        {"to": T, "signal": None},
        {"to": T, "signal": []},
        {"to": T, "signal": "offer"},
        {"to": T, "signal": 1},
        {"to": T, "signal": {}, "id": ""},
        {"to": T, "signal": {}, "id": "x" * 65},
        {"to": T, "signal": {}, "id": 5},
        {"to": T, "signal": {}, "id": ["a"]},
        {"to": T, "signal": {}, "id": False},
    ],
)
def test_signal_fields_400(body: dict[str, Any]) -> None:
    assert status_of(signal_fields, body) == 400


# --- batch_fields --------------------------------------------------------------------------


def test_batch_fields_ok() -> None:
    items = [{"to": T.upper(), "signal": {"n": n}, "id": f"i{n}"} for n in range(MAX_BATCH)]
    batch = batch_fields({"signals": items})
    assert [(o.to, loads(o.payload), o.request_id) for o in batch] == [
        (T, {"n": n}, f"i{n}") for n in range(MAX_BATCH)
    ]
    assert batch_fields({"signals": [{"to": T, "signal": {}}]})[0].request_id is None


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"signals": []}, "list of 1 to 32"),
        ({"signals": {}}, "list of 1 to 32"),
        ({"signals": None}, "list of 1 to 32"),
        ({"signals": [{"to": T, "signal": {}}] * (MAX_BATCH + 1)}, "list of 1 to 32"),
        ({"signals": [{"to": T, "signal": {}}], "to": T}, "gives to in each"),
        ({"signals": [{"to": T, "signal": {}}], "id": "x", "signal": {}}, "gives id, signal"),
        ({"signals": [{"to": T, "signal": {}}, 5]}, "signals[1] must be a JSON object"),
        ({"signals": [{"to": T, "signal": {}}, {"to": T}]}, "signals[1]: signal missing"),
        ({"signals": [{"to": "x", "signal": {}}]}, "signals[0]: to"),
        ({"signals": [{"to": T, "signal": {}, "id": ""}]}, "signals[0]: id must be"),
    ],
)
def test_batch_fields_400(body: dict[str, Any], says: str) -> None:
    with pytest.raises(ApiError) as info:
        batch_fields(body)
    assert info.value.status == 400 and says in info.value.message


# --- connect_credentials -------------------------------------------------------------------


def test_connect_nothing_given() -> None:
    assert connect_credentials({}, Headers()) == (None, None)
    assert connect_credentials({"session_id": "", "token": ""}, Headers()) == (None, None)


def test_connect_from_query_or_headers() -> None:
    assert connect_credentials({"session_id": S, "token": T}, Headers()) == (S, T)
    assert connect_credentials({}, h(X_Session_Id=S, X_Token=T)) == (S, T)
    assert connect_credentials({}, h(X_Session_Id=S, Authorization=f"Bearer {T}")) == (S, T)
    assert connect_credentials({"session_id": S.upper()}, h(X_Token=T.upper())) == (S, T)


def test_connect_session_without_token_and_token_without_session() -> None:
    assert connect_credentials({"session_id": S}, Headers()) == (S, None)
    assert connect_credentials({"token": T}, Headers()) == (None, T)


@pytest.mark.parametrize("bad", ["nope", "123", S + "0"])
def test_connect_bad_session_id_is_400(bad: str) -> None:
    assert status_of(connect_credentials, {"session_id": bad}, Headers()) == 400
    assert status_of(connect_credentials, {}, h(X_Session_Id=bad)) == 400


def test_connect_two_session_ids() -> None:
    assert connect_credentials({"session_id": S}, h(X_Session_Id=S.upper())) == (S, None)
    assert status_of(connect_credentials, {"session_id": S}, h(X_Session_Id=T)) == 400


def test_connect_token_not_uuid_is_returned_as_given() -> None:
    assert connect_credentials({"session_id": S, "token": "Wrong"}, Headers()) == (S, "Wrong")


def test_connect_tokens_in_different_case_agree() -> None:
    got = connect_credentials({"session_id": S, "token": T.upper()}, h(X_Token=T))
    assert got == (S, T)
    got = connect_credentials({"token": T}, h(X_Token=T.upper(), Authorization=f"Bearer {T}"))
    assert got == (None, T)
    # a token that is no UUID is compared as it is (it matches no session anyway)
    assert connect_credentials({"token": "Wrong"}, h(X_Token="wrong")) == (None, "")


def test_connect_tokens_that_differ_match_nothing() -> None:
    got = connect_credentials({"session_id": S, "token": T}, h(X_Token=T2))
    assert got == (S, "")
    got = connect_credentials({}, h(X_Session_Id=S, X_Token=T, Authorization=f"Bearer {T2}"))
    assert got == (S, "")


# --- last_event_id -------------------------------------------------------------------------


def test_last_event_id_sources() -> None:
    assert last_event_id({}, Headers()) is None
    assert last_event_id({}, h(Last_Event_ID="42")) == 42
    assert last_event_id({"last_event_id": "7"}, Headers()) == 7
    assert last_event_id({"last_event_id": "7"}, h(Last_Event_ID="42")) == 42
    assert last_event_id({}, Headers([("last-event-id", "0")])) == 0


def test_last_event_id_header_decides_even_when_malformed() -> None:
    assert last_event_id({"last_event_id": "7"}, h(Last_Event_ID="x")) is None


@pytest.mark.parametrize("raw", ["", "-1", "+1", "1.0", "abc", "1e5", "٣", "0x1F", "1 2", "9" * 81])
def test_last_event_id_malformed_is_ignored(raw: str) -> None:
    assert last_event_id({"last_event_id": raw}, Headers()) is None
    assert last_event_id({}, h(Last_Event_ID=raw)) is None


def test_last_event_id_big_values_kept_exact() -> None:
    big = "9" * 80
    assert last_event_id({}, h(Last_Event_ID=big)) == int(big)
    assert last_event_id({}, h(Last_Event_ID="000123")) == 123
