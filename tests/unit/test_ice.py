"""ICE server lists and TURN REST API credentials, as pure functions. That coturn accepts
these credentials is shown against a real turnserver in tests/e2e/test_turn.py."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from roomkeeper.ice import (
    MAX_TTL,
    STUN_SCHEMES,
    TURN_SCHEMES,
    IceServers,
    parse_uris,
    turn_credential,
    uri_problem,
)

SECRET = "north-sea-herring-1234"
SESSION = "8f0c2b9e-7d1a-4c3e-9b5f-2a6d8e1f0c3b"
NOW = 1_800_000_000.75


def test_a_known_answer_credential() -> None:
    # Computed once by hand: printf %s "1800003600:8f0c...0c3b" | openssl dgst -sha1 -hmac
    # "north-sea-herring-1234" -binary | base64
    username, password = turn_credential(SECRET, SESSION, 1_800_003_600)
    assert username == "1800003600:8f0c2b9e-7d1a-4c3e-9b5f-2a6d8e1f0c3b"
    assert password == "/KG5wN/+evixgNlyUux8rcZvjgA="


def test_the_credential_is_the_turn_rest_api_one() -> None:
    username, password = turn_credential(SECRET, SESSION, 42)
    digest = hmac.new(SECRET.encode(), username.encode(), hashlib.sha1).digest()
    assert password == base64.b64encode(digest).decode()
    assert username.split(":", 1) == ["42", SESSION]


def test_nothing_configured_gives_an_empty_list() -> None:
    assert IceServers().for_session(SESSION, NOW) == []


def test_stun_alone_has_no_credentials() -> None:
    ice = IceServers(stun_uris=("stun:a.example:3478", "stun:b.example"))
    assert ice.for_session(SESSION, NOW) == [{"urls": ["stun:a.example:3478", "stun:b.example"]}]


def test_turn_gets_a_credential_that_expires_ttl_seconds_from_now() -> None:
    ice = IceServers(
        stun_uris=("stun:a.example",),
        turn_uris=("turn:t.example:3478?transport=udp", "turns:t.example:5349"),
        secret=SECRET,
        ttl=600,
    )
    stun, turn = ice.for_session(SESSION, NOW)
    assert stun == {"urls": ["stun:a.example"]}
    assert turn["urls"] == ["turn:t.example:3478?transport=udp", "turns:t.example:5349"]
    assert turn["username"] == f"{int(NOW) + 600}:{SESSION}"
    assert (turn["username"], turn["credential"]) == turn_credential(
        SECRET, SESSION, int(NOW) + 600
    )
    (another,) = IceServers(turn_uris=("turn:t.example",), secret=SECRET, ttl=600).for_session(
        "another-session", NOW
    )
    assert another["credential"] != turn["credential"]


def test_the_secret_stays_out_of_the_repr() -> None:
    assert SECRET not in repr(IceServers(turn_uris=("turn:t.example",), secret=SECRET))


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"turn_uris": ("turn:t.example",)}, "need the TURN secret"),
        ({"ttl": 0}, "1 to 86400"),
        ({"ttl": MAX_TTL + 1}, "1 to 86400"),
    ],
)
def test_bad_ice_settings(kwargs: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        IceServers(**kwargs)  # type: ignore[arg-type]


def test_parse_uris() -> None:
    assert parse_uris(" stun:a , ,stun:b:3478 ") == ("stun:a", "stun:b:3478")
    assert parse_uris("") == ()


@pytest.mark.parametrize(
    ("uri", "schemes", "ok"),
    [
        ("stun:stun.example.com", STUN_SCHEMES, True),
        ("stun:[2001:db8::1]:3478", STUN_SCHEMES, True),
        ("STUN:stun.example.com", STUN_SCHEMES, True),
        ("turn:127.0.0.1:3478?transport=udp", TURN_SCHEMES, True),
        ("turns:turn.example.com:5349?transport=tcp", TURN_SCHEMES, True),
        ("turn:turn.example.com", STUN_SCHEMES, False),
        ("stun:stun.example.com", TURN_SCHEMES, False),
        ("stuns:stun.example.com", STUN_SCHEMES, False),
        ("http://turn.example.com", TURN_SCHEMES, False),
        ("turn://turn.example.com", TURN_SCHEMES, False),
        ("turn:", TURN_SCHEMES, False),
        ("turn:a b", TURN_SCHEMES, False),
        ("turn:" + "a" * 600, TURN_SCHEMES, False),
    ],
)
def test_uri_checks(uri: str, schemes: tuple[str, ...], ok: bool) -> None:
    assert (uri_problem(uri, schemes) is None) == ok
