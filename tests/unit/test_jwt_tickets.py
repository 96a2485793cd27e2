"""JWT room tickets: tokens minted by PyJWT with every algorithm family, and every way a
ticket can be wrong, against the verifier alone. (On the wire: tests/integration/
test_admission_jwt.py.)"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from roomkeeper.admission import (
    MAX_TICKET_BYTES,
    AdmissionError,
    load_admission,
    parse_spec,
)
from roomkeeper.jwt_tickets import JwtRules, mint_jwt, room_matches, signing_key

SECRET = "a-jwt-hmac-secret-of-32-chars-at-least"
ROOM = "team-7/standup"


def now() -> int:
    return int(time.time())


def claims(**extra: Any) -> dict[str, Any]:
    return {"room": ROOM, "exp": now() + 300, **extra}


def hmac_admission(**rules: Any) -> Any:
    return load_admission(f"jwt:hmac:{SECRET}", JwtRules(**rules))


def refusal(admission: Any, token: str | None, room: str = ROOM) -> str:
    return admission.refusal(room, token) or ""


def pem_public(key: Any) -> bytes:
    data: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def pem_private(key: Any) -> bytes:
    data: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return data


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def write_pem(tmp_path: Path, key: Any, name: str = "public.pem") -> str:
    path = tmp_path / name
    path.write_bytes(pem_public(key))
    return str(path)


def jwk(key: Any, kid: str | None, alg: str | None = None) -> dict[str, Any]:
    family = (
        "RS256"
        if isinstance(key, rsa.RSAPrivateKey)
        else "ES256"
        if isinstance(key, ec.EllipticCurvePrivateKey)
        else "EdDSA"
    )
    algorithm = jwt.get_algorithm_by_name(family)
    entry: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    if kid is not None:
        entry["kid"] = kid
    if alg is not None:
        entry["alg"] = alg
    return entry


def write_jwks(path: Path, *entries: dict[str, Any]) -> str:
    path.write_text(json.dumps({"keys": list(entries)}))
    return str(path)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A JWT put together by hand (PyJWT refuses to make the forgeries below)."""
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    if key is None:
        return head + "."
    return head + "." + b64(hmac.new(key, head.encode(), hashlib.sha256).digest())


# --- each algorithm family -------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_tickets(alg: str) -> None:
    secret = SECRET + "-" * 40  # long enough for HS512's own minimum too
    admission = load_admission(f"jwt:hmac:{secret}")
    assert refusal(admission, jwt.encode(claims(), secret, algorithm=alg)) == ""
    other = jwt.encode(claims(), "x" + secret, algorithm=alg)
    assert "bad signature" in refusal(admission, other)


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512"])
def test_rsa_tickets(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, alg: str) -> None:
    admission = load_admission(f"jwt:key:{write_pem(tmp_path, rsa_key)}")
    assert refusal(admission, jwt.encode(claims(), rsa_key, algorithm=alg)) == ""
    assert "alg must be RS256 or RS384 or RS512" in refusal(
        admission, jwt.encode(claims(), rsa_key, algorithm="PS256")
    )


def test_ec_and_eddsa_tickets(
    tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    ec_admission = load_admission(f"jwt:key:{write_pem(tmp_path, ec_key, 'ec.pem')}")
    assert refusal(ec_admission, jwt.encode(claims(), ec_key, algorithm="ES256")) == ""
    ed_admission = load_admission(f"jwt:key:{write_pem(tmp_path, ed_key, 'ed.pem')}")
    assert refusal(ed_admission, jwt.encode(claims(), ed_key, algorithm="EdDSA")) == ""
    # A key verifies only its own algorithm: an Ed25519 ticket against the EC key.
    assert "alg must be ES256" in refusal(
        ec_admission, jwt.encode(claims(), ed_key, algorithm="EdDSA")
    )
    other = ec.generate_private_key(ec.SECP256R1())
    assert "bad signature" in refusal(ec_admission, jwt.encode(claims(), other, algorithm="ES256"))


def test_a_certificate_or_a_weak_key_file(tmp_path: Path) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(AdmissionError, match="at least 2048 bits"):
        load_admission(f"jwt:key:{write_pem(tmp_path, small)}")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    with pytest.raises(AdmissionError, match="holds no PEM public key"):
        load_admission(f"jwt:key:{garbage}")


# --- every way a ticket is wrong --------------------------------------------------------------


@pytest.mark.parametrize(
    ("token_claims", "problem"),
    [
        ({"exp": -1}, "expired (exp)"),
        ({"exp": "tomorrow"}, "malformed"),
        ({"nbf": 10**10}, "not valid yet"),
        ({"iat": 10**10}, "not valid yet"),
        ({"room": "team-8/standup"}, "for another room"),
        ({"room": 7}, "'room' claim must be a string"),
        ({"room": None}, "lacks the 'room' claim"),
        ({"exp": None}, "lacks the 'exp' claim"),
        ({"aud": "someone-else"}, "aud), but --admission-audience is unset"),
    ],
)
def test_wrong_claims(token_claims: dict[str, Any], problem: str) -> None:
    payload = {k: v for k, v in {**claims(), **token_claims}.items() if v is not None}
    if payload.get("exp") == -1:
        payload["exp"] = now() - 3600
    token = jwt.encode(payload, SECRET, algorithm="HS256")
    assert problem in refusal(hmac_admission(), token)


def test_the_leeway_forgives_a_little_clock_skew() -> None:
    admission = hmac_admission(leeway=60)
    just_expired = jwt.encode(claims(exp=now() - 5), SECRET, algorithm="HS256")
    assert refusal(admission, just_expired) == ""
    assert "expired" in refusal(hmac_admission(leeway=0), just_expired)
    soon = jwt.encode(claims(nbf=now() + 5), SECRET, algorithm="HS256")
    assert refusal(admission, soon) == ""


def test_audience_and_issuer_when_configured() -> None:
    admission = hmac_admission(audience="rooms", issuer="https://auth.example")
    good = claims(aud="rooms", iss="https://auth.example")
    assert refusal(admission, jwt.encode(good, SECRET, algorithm="HS256")) == ""
    for wrong, problem in [
        ({"aud": "other"}, "another audience"),
        ({"aud": ["other", "rooms"]}, ""),  # one of a list of audiences is enough
        ({"iss": "https://evil.example"}, "another issuer"),
        ({"aud": None}, "lacks the 'aud' claim"),
        ({"iss": None}, "lacks the 'iss' claim"),
    ]:
        payload = {k: v for k, v in {**good, **wrong}.items() if v is not None}
        assert problem in refusal(admission, jwt.encode(payload, SECRET, algorithm="HS256"))
        if problem:
            assert refusal(admission, jwt.encode(payload, SECRET, algorithm="HS256"))


def test_a_configurable_room_claim() -> None:
    admission = hmac_admission(room_claim="rk_room")
    assert refusal(admission, jwt.encode(claims(rk_room=ROOM), SECRET, algorithm="HS256")) == ""
    no_claim = jwt.encode({"exp": now() + 60, "room": ROOM}, SECRET, algorithm="HS256")
    assert "lacks the 'rk_room' claim" in refusal(admission, no_claim)


@pytest.mark.parametrize(
    ("pattern", "room", "admits"),
    [
        ("team-7/standup", "team-7/standup", True),
        ("team-7/standup", "team-7/standup2", False),
        ("team-7/*", "team-7/standup", True),
        ("team-7/*", "team-7/", True),
        ("team-7/*", "team-8/standup", False),
        ("*", "anything at all", True),
        ("team-7*", "team-70", True),
        ("*/standup", "team-7/standup", False),  # only a trailing * is a wildcard
        ("", "room", False),
    ],
)
def test_room_patterns(pattern: str, room: str, admits: bool) -> None:
    assert room_matches(pattern, room) == admits


def test_alg_none_is_refused() -> None:
    payload = claims()
    for header in ({"alg": "none", "typ": "JWT"}, {"alg": "None"}, {"typ": "JWT"}):
        token = hand_made(header, payload, None)
        assert "alg must be HS256 or HS384 or HS512" in refusal(hmac_admission(), token)
    unsigned = jwt.encode(payload, None, algorithm="none")
    assert "alg must be" in refusal(hmac_admission(), unsigned)


def test_hs256_signed_with_the_rsa_public_key_is_refused(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    """The classic confusion: the server's public key used as an HMAC secret."""
    path = write_pem(tmp_path, rsa_key)
    forged = hand_made({"alg": "HS256", "typ": "JWT"}, claims(), Path(path).read_bytes())
    assert "alg must be RS256" in refusal(load_admission(f"jwt:key:{path}"), forged)
    jwks = write_jwks(tmp_path / "keys.json", jwk(rsa_key, "k1"))
    assert "alg must be RS256" in refusal(load_admission(f"jwt:jwks:{jwks}"), forged)


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b.c",
        "a.b",
        "eyJhbGciOiJIUzI1NiJ9",
        "eyJhbGciOiJIUzI1NiJ9.%%%.sig",
        b64(b"[1,2]") + "." + b64(b"{}") + ".sig",
        "\u00e9\u00e9.\u00e9.\u00e9",
    ],
)
def test_malformed_tokens(token: str) -> None:
    problem = refusal(hmac_admission(), token)
    assert "malformed" in problem or "bad signature" in problem
    assert token not in problem


def test_oversized_tokens_are_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    admission = hmac_admission()
    padded = jwt.encode(claims(pad="x" * MAX_TICKET_BYTES), SECRET, algorithm="HS256")

    def must_not_parse(_: object) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(jwt, "get_unverified_header", must_not_parse)
    assert "longer than 8192 bytes" in refusal(admission, padded)
    assert "required" in refusal(admission, None) and "required" in refusal(admission, "")


def test_refusals_never_repeat_the_token() -> None:
    admission = hmac_admission(audience="rooms")
    for payload in (claims(exp=now() - 999), claims(room="x"), claims(aud="y"), claims()):
        token = jwt.encode(payload, "wrong-" + SECRET, algorithm="HS256")
        problem = refusal(admission, token)
        assert problem and all(part not in problem for part in token.split("."))


# --- JWKS files -------------------------------------------------------------------------------


def test_jwks_picks_the_key_by_kid(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    path = write_jwks(tmp_path / "keys.json", jwk(rsa_key, "rsa-1"), jwk(ec_key, "ec-1", "ES256"))
    admission = load_admission(f"jwt:jwks:{path}")
    by_rsa = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    by_ec = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "ec-1"})
    assert refusal(admission, by_rsa) == "" and refusal(admission, by_ec) == ""
    crossed = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "ec-1"})
    assert "alg must be ES256" in refusal(admission, crossed)
    unknown = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-2"})
    assert "kid) is not in the key set" in refusal(admission, unknown)
    assert "rsa-2" not in refusal(admission, unknown)
    no_kid = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert "no key id (kid)" in refusal(admission, no_kid)


def test_a_jwks_of_one_key_needs_no_kid(tmp_path: Path, ed_key: Any) -> None:
    path = write_jwks(tmp_path / "keys.json", jwk(ed_key, None, "EdDSA"))
    token = jwt.encode(claims(), ed_key, algorithm="EdDSA")
    assert refusal(load_admission(f"jwt:jwks:{path}"), token) == ""


def test_jwks_rotation_on_file_change(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    path = tmp_path / "keys.json"
    write_jwks(path, jwk(rsa_key, "old"))
    admission = load_admission(f"jwt:jwks:{path}")
    old = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "old"})
    new = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "new"})
    assert refusal(admission, old) == "" and "not in the key set" in refusal(admission, new)
    # Rotation: the new key is published beside the old one, then the old one is retired.
    write_jwks(path, jwk(rsa_key, "old"), jwk(ec_key, "new", "ES256"))
    os.utime(path, ns=(1, 1))  # a change the check sees even within one clock tick
    assert refusal(admission, old) == "" and refusal(admission, new) == ""
    write_jwks(path, jwk(ec_key, "new", "ES256"))
    os.utime(path, ns=(2, 2))
    assert "not in the key set" in refusal(admission, old) and refusal(admission, new) == ""
    # A broken file (half written, say) keeps the keys that worked.
    path.write_text('{"keys": [')
    assert refusal(admission, new) == ""
    path.unlink()
    assert refusal(admission, new) == ""


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("not json", "is not JSON"),
        ('{"keys": {}}', "is not a JWKS document"),
        ('{"keys": []}', "holds no signing key"),
        ('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "secret (oct) key"),
        ('{"keys": [{"kty": "RSA", "n": "AQAB"}]}', "not a usable"),
    ],
)
def test_bad_jwks_files(tmp_path: Path, document: str, problem: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(document)
    with pytest.raises(AdmissionError, match=re.escape(problem)):
        load_admission(f"jwt:jwks:{path}")


def test_a_jwks_entry_must_be_public_and_its_alg_must_fit(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    private = json.loads(jwt.get_algorithm_by_name("RS256").to_jwk(rsa_key))
    with pytest.raises(AdmissionError, match="is a private key"):
        load_admission(f"jwt:jwks:{write_jwks(tmp_path / 'a.json', private)}")
    with pytest.raises(AdmissionError, match="does not fit its key type"):
        load_admission(f"jwt:jwks:{write_jwks(tmp_path / 'b.json', jwk(rsa_key, 'k', 'ES256'))}")
    two = write_jwks(tmp_path / "c.json", jwk(rsa_key, None), jwk(rsa_key, "k"))
    with pytest.raises(AdmissionError, match="each needs a kid"):
        load_admission(f"jwt:jwks:{two}")


# --- minting (roomkeeper ticket) --------------------------------------------------------------


def test_minted_tickets_pass_their_own_verifier(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    rules = JwtRules(room_claim="r", audience="rooms", issuer="me")
    spec = parse_spec(f"jwt:hmac:{SECRET}")
    assert spec is not None
    token = mint_jwt(signing_key(spec), ROOM, 60, rules)
    assert refusal(load_admission(f"jwt:hmac:{SECRET}", rules), token) == ""
    assert jwt.get_unverified_header(token)["alg"] == "HS256"

    path = write_jwks(tmp_path / "keys.json", jwk(rsa_key, "r1"), jwk(ed_key, "e1", "EdDSA"))
    jwks = parse_spec(f"jwt:jwks:{path}")
    assert jwks is not None
    signer = signing_key(jwks, pem_private(ed_key))
    assert (signer.algorithm, signer.kid) == ("EdDSA", "e1")
    assert (
        refusal(load_admission(f"jwt:jwks:{path}", rules), mint_jwt(signer, ROOM, 60, rules)) == ""
    )

    with pytest.raises(AdmissionError, match="does not match"):
        key_spec = parse_spec(f"jwt:key:{write_pem(tmp_path, rsa_key)}")
        assert key_spec is not None
        signing_key(key_spec, pem_private(ed_key))
    with pytest.raises(AdmissionError, match="need the private key"):
        signing_key(jwks)
