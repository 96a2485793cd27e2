"""CORS: any origin, a list of origins, and preflights."""

from __future__ import annotations

import pytest
from werkzeug.datastructures import Headers

from roomkeeper.http.cors import ALLOWED_HEADERS, CorsPolicy, merge_vary

A = "https://app.example"
B = "http://localhost:5173"


@pytest.mark.parametrize("origin", [None, A, "null", "https://evil.example"])
def test_any_origin_always_star(origin: str | None) -> None:
    headers = CorsPolicy().headers_for(origin)
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Access-Control-Expose-Headers"] == "Retry-After, X-Request-Id"
    assert "Vary" not in headers


def test_listed_origin_echoed_with_vary() -> None:
    policy = CorsPolicy((A, B))
    assert policy.headers_for(B) == {
        "Access-Control-Allow-Origin": B,
        "Access-Control-Expose-Headers": "Retry-After, X-Request-Id",
        "Vary": "Origin",
    }


@pytest.mark.parametrize("origin", [None, "https://evil.example", A + "/", A.upper(), "null"])
def test_unlisted_origin_gets_no_allow_origin(origin: str | None) -> None:
    headers = CorsPolicy((A,)).headers_for(origin)
    assert headers == {"Vary": "Origin"}


def test_headers_are_fresh_dicts() -> None:
    policy = CorsPolicy()
    policy.headers_for(None)["X"] = "1"
    assert "X" not in policy.headers_for(None)


def allowed(headers: dict[str, str]) -> list[str]:
    return [name.strip() for name in headers["Access-Control-Allow-Headers"].split(",")]


@pytest.mark.parametrize("policy", [CorsPolicy(), CorsPolicy((A,))])
def test_preflight_names_every_header(policy: CorsPolicy) -> None:
    headers = policy.preflight_headers(A, "POST", None)
    assert headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
    assert allowed(headers) == [
        "Content-Type",
        "Authorization",
        "X-Token",
        "X-Session-Id",
        "Last-Event-ID",
    ]
    assert "*" not in headers["Access-Control-Allow-Headers"]
    assert int(headers["Access-Control-Max-Age"]) > 0
    assert headers["Access-Control-Expose-Headers"] == "Retry-After, X-Request-Id"
    assert headers["Access-Control-Allow-Origin"] == ("*" if policy.origins == ("*",) else A)


def test_preflight_vary() -> None:
    assert CorsPolicy().preflight_headers(A)["Vary"] == "Access-Control-Request-Headers"
    listed = CorsPolicy((A,)).preflight_headers(A)
    assert listed["Vary"] == "Origin, Access-Control-Request-Headers"


def test_preflight_echoes_requested_headers_once() -> None:
    headers = CorsPolicy().preflight_headers(
        A, "POST", "content-type, x-token, X-Request-Id,, authorization , x-request-id"
    )
    assert allowed(headers) == [*ALLOWED_HEADERS, "X-Request-Id"]


def test_preflight_drops_malformed_requested_names() -> None:
    headers = CorsPolicy().preflight_headers(A, "GET", "X-Ok, bad name, x:y, \u00e9")
    assert allowed(headers) == [*ALLOWED_HEADERS, "X-Ok"]


def test_preflight_from_unlisted_origin_allows_nothing() -> None:
    headers = CorsPolicy((A,)).preflight_headers("https://evil.example", "POST", "x-token")
    assert headers == {"Vary": "Origin, Access-Control-Request-Headers"}
    assert CorsPolicy((A,)).preflight_headers(None, None, None) == headers


def test_custom_max_age() -> None:
    assert CorsPolicy(max_age=60).preflight_headers(None)["Access-Control-Max-Age"] == "60"


@pytest.mark.parametrize(
    ("current", "added", "merged"),
    [
        (None, "Origin", "Origin"),
        ("", "Origin", "Origin"),
        ("Access-Control-Request-Headers", "Origin", "Access-Control-Request-Headers, Origin"),
        (
            "Origin, Access-Control-Request-Headers",
            "Origin",
            "Origin, Access-Control-Request-Headers",
        ),
        ("origin", "Origin", "origin"),
        ("Accept-Encoding,  Origin ", "Origin", "Accept-Encoding, Origin"),
        ("*", "Origin", "*"),
    ],
)
def test_merge_vary(current: str | None, added: str, merged: str) -> None:
    assert merge_vary(current, added) == merged


@pytest.mark.parametrize("origins", [("*",), ("https://a.example",)], ids=["any", "listed"])
@pytest.mark.parametrize("origin", ["https://a.example", "https://evil.example", None])
def test_apply_keeps_a_preflights_vary(origins: tuple[str, ...], origin: str | None) -> None:
    policy = CorsPolicy(origins)
    sinks: list[dict[str, str] | Headers] = [{}, Headers()]
    for headers in sinks:
        headers.update(policy.preflight_headers(origin, "POST", "x-a"))
        before = headers.get("Vary")
        policy.apply(headers, origin)
        assert headers.get("Vary") == before  # already names all it must


def test_apply_adds_origin_to_an_answers_own_vary() -> None:
    headers = Headers({"Vary": "Accept-Encoding"})
    CorsPolicy(("https://a.example",)).apply(headers, "https://a.example")
    assert headers.get_all("Vary") == ["Accept-Encoding, Origin"]
    assert headers["Access-Control-Allow-Origin"] == "https://a.example"
