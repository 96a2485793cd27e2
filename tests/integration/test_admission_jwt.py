"""JWT admission on the wire: a real server with ``--admission jwt:...`` admits a new
session with a good ticket (``?ticket=`` or ``X-Roomkeeper-Ticket``), refuses a bad one
with a 403 that says why and never repeats it, and lets sessions resume without one."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .conftest import ServerFactory, assert_error, connect_refused, join, new_room

SECRET = "jwt-admission-secret-for-the-tests-01"


def ticket(room: str, key: Any = SECRET, alg: str = "HS256", **extra: Any) -> str:
    claims = {"room": room, "exp": int(time.time()) + 300, **extra}
    headers = {"kid": extra.pop("kid")} if "kid" in extra else None
    claims.pop("kid", None)
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


async def refused(client: httpx.AsyncClient, base: str, room: str, token: str) -> str:
    response = await connect_refused(client, base, {"room": room, "ticket": token})
    error = assert_error(response, 403)["error"]
    assert token not in response.text and token.split(".")[2] not in response.text
    return error


async def test_hmac_tickets_on_the_wire(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    server = server_factory(
        storage="memory", admission=f"jwt:hmac:{SECRET}", admission_audience="rooms"
    )
    base, room = server.url, new_room()
    for token, problem in [
        (ticket(room, aud="rooms", exp=int(time.time()) - 3600), "expired"),
        (ticket("team-8/x", aud="rooms"), "another room"),
        (ticket(room, key="a-different-secret-of-enough-length!", aud="rooms"), "bad signature"),
        (ticket(room), "lacks the 'aud' claim"),
        (ticket(room, aud="elsewhere"), "another audience"),
        (ticket(room, aud="rooms", nbf=int(time.time()) + 3600), "not valid yet"),
        ("not.a.jwt", "malformed"),
    ]:
        assert problem in await refused(client, base, room, token)
    oversized = ticket(room, aud="rooms", pad="x" * 9000)
    assert "longer than 8192" in await refused(client, base, room, oversized)
    missing = await connect_refused(client, base, {"room": room})
    assert "X-Roomkeeper-Ticket" in assert_error(missing, 403)["error"]

    good = ticket(room, aud="rooms")
    async with join(client, base, room, ticket=good) as a:
        assert not a.resumed
        # The header, with the session's own Bearer beside it for a resumption: no clash.
        headers = {
            "X-Roomkeeper-Ticket": ticket("*", aud="rooms"),
            "X-Session-Id": a.session_id,
            "Authorization": f"Bearer {a.token}",
        }
        async with join(client, base, room, headers=headers) as a2:
            assert a2.resumed and a2.session_id == a.session_id
        # Resuming needs no ticket at all.
        async with join(client, base, room, session_id=a.session_id, token=a.token) as a3:
            assert a3.resumed
        async with join(
            client, base, room, headers={"X-Roomkeeper-Ticket": ticket("*", aud="rooms")}
        ) as b:
            assert not b.resumed and b.session_id != a.session_id
    differ = await connect_refused(
        client,
        base,
        {"room": room, "ticket": good},
        headers={"X-Roomkeeper-Ticket": ticket(room, aud="rooms", n=2)},
    )
    assert "differ" in assert_error(differ, 400)["error"]
    assert SECRET not in server.log()


def jwks(path: Path, *entries: tuple[Any, str]) -> None:
    keys = []
    for key, kid in entries:
        family = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
        entry = json.loads(jwt.get_algorithm_by_name(family).to_jwk(key.public_key()))
        keys.append({**entry, "kid": kid})
    path.write_text(json.dumps({"keys": keys}))


async def test_jwks_rotation_through_a_running_server(
    client: httpx.AsyncClient, server_factory: ServerFactory, tmp_path: Path
) -> None:
    old = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    new = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "jwks.json"
    jwks(path, (old, "2026-old"))
    server = server_factory(storage="memory", admission=f"jwt:jwks:{path}")
    base, room = server.url, new_room()
    by_old = ticket(room, old, "RS256", kid="2026-old")
    by_new = ticket(room, new, "ES256", kid="2027-new")
    async with join(client, base, room, ticket=by_old):
        pass
    assert "not in the key set" in await refused(client, base, room, by_new)
    jwks(path, (old, "2026-old"), (new, "2027-new"))
    os.utime(path, ns=(10**18, 10**18))
    async with join(client, base, room, ticket=by_new):
        pass
    forged = ticket(room, path.read_bytes().decode()[:40] + "x" * 10, "HS256", kid="2026-old")
    assert "alg must be RS256" in await refused(client, base, room, forged)


@pytest.mark.parametrize("spec", ["jwt:key:/nonexistent.pem", "jwt:jwks:/nonexistent.json"])
def test_a_server_with_an_unreadable_key_file_does_not_start(
    server_factory: ServerFactory, spec: str
) -> None:
    with pytest.raises(RuntimeError, match="cannot read"):
        server_factory(storage="memory", admission=spec)
