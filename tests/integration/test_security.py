"""Secrets stay with their owners, and nobody gets into a session or a room that is not
theirs. Complements test_signal.py, test_leave.py and test_reconnect.py (impersonation,
wrong and missing tokens, sessions of other rooms) and test_observe.py (tokens in logs):
here every place a token could leak to is checked at once, after traffic that puts
tokens in every place a client can give one, refusals included."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx

from .conftest import (
    ServerFactory,
    assert_error,
    connect_refused,
    join,
    new_room,
    post,
    send_ok,
    sync,
)

ADMIN = "security-admin-token-" + uuid.uuid4().hex


async def test_tokens_and_event_ids_reach_their_owner_only(
    client: httpx.AsyncClient, server_factory: ServerFactory, tmp_path: Path
) -> None:
    trace = tmp_path / "trace.jsonl"
    server = server_factory(
        log_level="debug", log_format="json", admin_token=ADMIN, trace=str(trace)
    )
    base = server.url
    room, elsewhere = new_room(), new_room()
    answers: list[httpx.Response] = []  # every answer that is not a stream

    async def keep(response: httpx.Response) -> httpx.Response:
        answers.append(response)
        return response

    async with (
        join(client, base, room) as a,
        join(client, base, room) as b,
        join(client, base, elsewhere) as c,
    ):
        owners = {a.session_id: a.token, b.session_id: b.token, c.session_id: c.token}
        body = {"sender": a.session_id, "to": b.session_id, "signal": {"sdp": "offer"}}
        await send_ok(client, base, a, b, {"sdp": "offer"})
        await keep(await post(client, base, "signal", room, body, headers={"X-Token": a.token}))
        bearer = {"Authorization": f"Bearer {a.token}"}
        await keep(await post(client, base, "signal", room, body, headers=bearer))
        await send_ok(client, base, b, a, {"sdp": "answer"})
        # Refusals that hold tokens: a peer's token, tokens that disagree, another room's
        # session, a recipient elsewhere, a token that is not a UUID, unknown paths.
        for bad in (
            {**body, "token": b.token},
            {**body, "token": a.token, "to": c.session_id},
            {**body, "token": a.token + "x"},
            {"sender": c.session_id, "to": a.session_id, "token": c.token, "signal": {}},
        ):
            await keep(await post(client, base, "signal", room, bad))
        await keep(
            await post(
                client,
                base,
                "signal",
                room,
                {**body, "token": a.token},
                headers={"X-Token": b.token},
            )
        )
        await keep(
            await post(client, base, "leave", room, {"sender": a.session_id, "token": b.token})
        )
        await keep(await client.get(f"{base}/nowhere/{a.token}", params={"token": a.token}))
        await keep(await client.put(f"{base}/api/signal", params={"token": a.token}))
        for params, headers in (
            ({"session_id": a.session_id, "token": b.token}, {}),
            ({"session_id": a.session_id}, {"X-Token": b.token}),
            ({}, {"X-Session-Id": a.session_id, "Authorization": f"Bearer {c.token}"}),
        ):
            await keep(await connect_refused(client, base, {"room": room, **params}, headers))
        # Resumptions with the token in the URL, and by Last-Event-ID alone.
        params = {"session_id": a.session_id, "token": a.token}
        async with join(client, base, room, **params) as a2:
            assert a2.resumed
            await send_ok(client, base, b, a2, {"n": 2})
            await sync(client, a2)
        lei = {"Last-Event-ID": str(b.stream.last_id)}
        async with join(client, base, room, headers=lei, last_event_id=str(b.stream.last_id)) as b2:
            assert b2.resumed
            await sync(client, b2)
        for replaced in (a, b):  # to their bye
            await replaced.stream.expect_end()
        await sync(client, c)
        await keep(await client.get(f"{base}/metrics"))
        admin = {"Authorization": f"Bearer {ADMIN}"}
        await keep(await client.get(f"{base}/admin/rooms", headers=admin))
        await keep(await client.get(f"{base}/admin/rooms/{room}", headers=admin))
        beacon = json.dumps({"sender": c.session_id, "token": c.token})
        await keep(
            await client.post(f"{base}/api/leave", params={"room": elsewhere}, content=beacon)
        )
        streams = {"a": a, "a2": a2, "b": b, "b2": b2, "c": c}
    assert server.stop() == 0

    # Streams: a token appears on its own session's streams, in `session` events only.
    for name, peer in streams.items():
        for event in peer.stream.events:
            for sid, token in owners.items():
                if token in event.raw_data:
                    assert (sid, event.event) == (peer.session_id, "session"), (name, event)
    # Answers, logs, the trace: no token, and no event id of any stream (an event id
    # resumes a session without its token).
    ids = {str(e.id) for p in streams.values() for e in p.stream.events}
    secrets = set(owners.values()) | ids | {str(i // 10**20) for i in map(int, ids)}
    texts: dict[str, str] = {
        f"answer {r.request.url.path} {r.status_code}": r.text for r in answers
    }
    texts["server log"] = server.log()
    texts["trace"] = trace.read_text()
    assert any(r.status_code == 403 for r in answers) and any(r.status_code == 404 for r in answers)
    for where, text in texts.items():
        leaked = {s for s in secrets if s in text}
        assert not leaked, f"{where} holds {leaked}"
    records = [
        json.loads(line) for line in texts["server log"].splitlines() if line.startswith("{")
    ]
    assert any(r.get("route") == "/api/connect" for r in records)  # debug logs did flow


async def test_last_event_id_of_another_room_takes_no_session(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    """An event id names one session of one room: in another room it is unknown (a new
    session, nothing replayed), and the session it belongs to is left alone."""
    server = server_factory(storage="memory")
    room_a, room_b = new_room("a"), new_room("b")
    async with join(client, server.url, room_a) as a, join(client, server.url, room_a) as peer:
        await a.stream.next()
        await send_ok(client, server.url, peer, a, {"private": True})
        private = await a.stream.next()
        headers = {"Last-Event-ID": str(private.id - 1)}
        async with join(client, server.url, room_b, headers=headers) as intruder:
            assert not intruder.resumed and intruder.session_id != a.session_id
            assert intruder.roster == [intruder.session_id]
            assert await sync(client, intruder) == []  # no replay of a's signal
            # Nor can it reach room A: neither a's id nor its own is of room A.
            body = {
                "sender": intruder.session_id,
                "to": a.session_id,
                "token": intruder.token,
                "signal": {},
            }
            assert_error(await post(client, server.url, "signal", room_b, body), 404)
            assert_error(await post(client, server.url, "signal", room_a, body), 403)
            leave_a = {"sender": a.session_id, "token": intruder.token}
            assert_error(await post(client, server.url, "leave", room_a, leave_a), 403)
        assert await sync(client, a) == []  # a's stream was neither replaced nor told anything


async def test_one_token_given_twice_in_different_case_is_one_token(
    client: httpx.AsyncClient, base: str
) -> None:
    """UUIDs compare without case: a token in the body and in X-Token or Bearer, in
    different case, is accepted (as each alone is); so is a connect whose query and
    X-Token give one token in different case. A different token is still refused."""
    room = new_room()
    async with join(client, base, room) as a, join(client, base, room) as b:
        body = {"sender": a.session_id, "to": b.session_id, "signal": {"n": 1}}
        lower, upper = a.token.lower(), a.token.upper()
        for token, headers in (
            (lower, {"X-Token": upper}),
            (upper, {"X-Token": lower}),
            (lower, {"Authorization": f"Bearer {upper}"}),
            (None, {"X-Token": upper, "Authorization": f"Bearer {lower}"}),
        ):
            given = body if token is None else {**body, "token": token}
            response = await post(client, base, "signal", room, given, headers=headers)
            assert response.status_code == 200, (headers, response.text)
        assert [e.data["signal"] for e in await sync(client, b)] == [{"n": 1}] * 4
        other = {**body, "token": lower}
        refused = await post(client, base, "signal", room, other, headers={"X-Token": b.token})
        assert_error(refused, 403)

        async with join(
            client,
            base,
            room,
            headers={"X-Token": lower},
            session_id=a.session_id.upper(),
            token=upper,
        ) as again:
            assert again.resumed and again.session_id == a.session_id
        leave = {"sender": b.session_id, "token": b.token.upper()}
        response = await post(
            client, base, "leave", room, leave, headers={"X-Token": b.token.lower()}
        )
        assert response.status_code == 200, response.text
