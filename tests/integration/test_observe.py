"""Observability on a real server: /metrics moving with traffic and free of secrets, the
admin view's access rules and contents, the --trace file, and JSON logs without tokens."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from .conftest import (
    Peer,
    ServerFactory,
    ServerProcess,
    assert_error,
    join,
    leave,
    new_room,
    post,
    send,
    send_ok,
    sync,
)

ADMIN = "admin-" + uuid.uuid4().hex
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient, base: str) -> tuple[str, Samples]:
    response = await client.get(f"{base}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            found[(s.name, frozenset(s.labels.items()))] = s.value
    return response.text, found


def get(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return get(after, name, **labels) - get(before, name, **labels)


def label_values(found: Samples) -> set[str]:
    return {value for _, labels in found for _, value in labels}


@pytest.fixture
def admin_server(server_factory: ServerFactory) -> ServerProcess:
    return server_factory(admin_token=ADMIN)


# --- metrics -------------------------------------------------------------------------------


async def test_metrics_move_with_traffic(client: httpx.AsyncClient, server: ServerProcess) -> None:
    base = server.url
    _, before = await scrape(client, base)
    room = new_room("metrics")
    async with join(client, base, room) as a, join(client, base, room) as b:
        await send_ok(client, base, a, b, {"sdp": "offer"})
        signal = await b.stream.until("signal")
        assert signal.data["signal"] == {"sdp": "offer"}
        _, during = await scrape(client, base)
        assert get(during, "roomkeeper_streams_open") == 2
        assert get(during, "roomkeeper_actors_live", namespace="rooms") >= 1
    _, after = await scrape(client, base)

    requests = "roomkeeper_http_requests_total"
    assert delta(before, after, requests, route="/api/connect", method="GET", status="200") == 2
    assert delta(before, after, requests, route="/api/signal", method="POST", status="200") == 1
    assert delta(before, after, requests, route="/metrics", method="GET", status="200") == 2
    duration = "roomkeeper_http_request_duration_seconds_count"
    assert delta(before, after, duration, route="/api/signal") == 1
    assert delta(before, after, duration, route="/api/connect") == 2
    assert delta(before, after, "roomkeeper_signals_relayed_total") == 1
    assert delta(before, after, "roomkeeper_signal_delivery_seconds_count") == 1
    assert 0 < delta(before, after, "roomkeeper_signal_delivery_seconds_sum") < 5
    assert delta(before, after, "roomkeeper_streams_opened_total") == 2
    ns = {"namespace": "rooms"}
    assert delta(before, after, "roomkeeper_actor_activations_total", **ns) == 1
    assert delta(before, after, "roomkeeper_actor_messages_total", **ns) >= 3
    assert get(after, "roomkeeper_actor_handler_errors_total", **ns) == 0
    commits = "roomkeeper_storage_operation_duration_seconds_count"
    assert delta(before, after, commits, operation="commit") >= 2
    assert get(after, "process_resident_memory_bytes") > 0


async def test_hibernation_and_wakes_are_counted(
    client: httpx.AsyncClient, server: ServerProcess
) -> None:
    base = server.url
    room = new_room("sleepy")
    ns = {"namespace": "rooms"}
    async with join(client, base, room) as a:
        with trio.fail_after(10):
            while True:  # idle 1 s (FAST): the room hibernates, its stream stays open
                _, asleep = await scrape(client, base)
                if get(asleep, "roomkeeper_actor_hibernations_total", **ns) >= 1:
                    break
                await trio.sleep(0.2)
        assert get(asleep, "roomkeeper_actors_live", **ns) == 0
        assert get(asleep, "roomkeeper_actors_hibernated", **ns) == 1
        assert get(asleep, "roomkeeper_streams_open") == 1
        await send_ok(client, base, a, a, {"wake": "up"})
        await a.stream.until("signal")
        _, awake = await scrape(client, base)
    assert delta(asleep, awake, "roomkeeper_actor_wakes_total", cause="message", **ns) == 1
    assert delta(asleep, awake, "roomkeeper_actor_activations_total", **ns) == 1
    assert get(awake, "roomkeeper_actors_live", **ns) == 1


async def test_no_label_carries_a_token_a_session_or_a_room(
    client: httpx.AsyncClient, server: ServerProcess
) -> None:
    base = server.url
    room = new_room("secret-room")
    async with join(client, base, room) as a, join(client, base, room) as b:
        await send_ok(client, base, a, b, {"x": 1})
        await send(client, base, a, str(uuid.uuid4()), {"x": 2})  # 404: no such peer
        bad = {"sender": a.session_id, "to": b.session_id, "token": str(uuid.uuid4())}
        await post(client, base, "signal", room, {**bad, "signal": {}})  # 403
        await client.get(f"{base}/api/{a.token}/{a.session_id}", params={"room": room})
        await client.get(f"{base}/{room}")
        await leave(client, base, b)
        secrets = {a.token, b.token, a.session_id, b.session_id, room}
        text, found = await scrape(client, base)
    values = label_values(found)
    assert "other" in values
    for secret in secrets:
        assert secret not in text
        assert not any(secret in v for v in values)
    routes = {dict(labels).get("route") for name, labels in found if name.startswith("roomkeeper_")}
    assert routes - {None} <= {"/api/connect", "/api/signal", "/api/leave", "/metrics", "other"}


# --- admin ---------------------------------------------------------------------------------


async def test_admin_is_404_when_disabled(client: httpx.AsyncClient, server: ServerProcess) -> None:
    for path in ("/admin/rooms", "/admin/rooms/anything"):
        for headers in ({}, {"Authorization": f"Bearer {ADMIN}"}):
            assert_error(await client.get(server.url + path, headers=headers), 404)
    assert_error(await client.post(server.url + "/admin/rooms"), 404)


async def test_admin_refuses_missing_and_wrong_tokens(
    client: httpx.AsyncClient, admin_server: ServerProcess
) -> None:
    for path in ("/admin/rooms", "/admin/rooms/some-room"):
        url = admin_server.url + path
        missing = await client.get(url)
        assert_error(missing, 401)
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert_error(await client.get(url, headers={"Authorization": "Basic YTpi"}), 401)
        wrong = await client.get(url, headers={"Authorization": f"Bearer {ADMIN}x"})
        assert_error(wrong, 403)
        assert ADMIN not in wrong.text


async def test_admin_token_from_the_environment(
    client: httpx.AsyncClient, server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROOMKEEPER_ADMIN_TOKEN", ADMIN)
    server = server_factory()
    ok = await client.get(server.url + "/admin/rooms", headers={"Authorization": f"Bearer {ADMIN}"})
    assert ok.status_code == 200 and ok.json() == {"actors": [], "next": None}
    assert ADMIN not in server.log()


async def test_admin_lists_rooms_and_sessions_without_tokens(
    client: httpx.AsyncClient, admin_server: ServerProcess
) -> None:
    base = admin_server.url
    auth = {"Authorization": f"Bearer {ADMIN}"}
    room = new_room("admin") + "/with slash"
    async with join(client, base, room) as a, join(client, base, room) as b:
        await send_ok(client, base, a, b, {"hello": "b"})
        listing = await client.get(f"{base}/admin/rooms", headers=auth)
        assert listing.status_code == 200
        (summary,) = [r for r in listing.json()["actors"] if r["name"] == room]
        assert summary["live"] is True and summary["streams"] == 2
        assert summary["last_activity"] is not None

        quoted = room.replace("/", "%2F")
        assert_error(await client.get(f"{base}/admin/rooms/{quoted}"), 401)
        detail = await client.get(f"{base}/admin/rooms/{quoted}", headers=auth)
        assert detail.status_code == 200, detail.text
        assert a.token not in detail.text and b.token not in detail.text
        assert "token" not in detail.text
        data = detail.json()
        assert data["name"] == room and data["streams"] == 2
        sessions = data["view"]["sessions"]
        assert [s["session_id"] for s in sessions] == [a.session_id, b.session_id]
        assert all(s["connected"] and s["expires_at"] is None for s in sessions)
        assert set(sessions[0]) == {
            "session_id",
            "connected",
            "expires_at",
            "queued",
            "join_seq",
            "replayable",
        }  # no token, no event id: an event id resumes a session

    page = await client.get(f"{base}/admin/rooms", params={"limit": "1"}, headers=auth)
    assert len(page.json()["actors"]) == 1 and page.json()["next"] == room
    assert_error(await client.get(f"{base}/admin/rooms", params={"limit": "0"}, headers=auth), 400)
    assert_error(await client.get(f"{base}/admin/rooms", params={"limit": "²"}, headers=auth), 400)
    assert_error(await client.get(f"{base}/admin/rooms/no-such-room", headers=auth), 404)


# --- the trace file ------------------------------------------------------------------------


async def test_trace_file_has_lifecycle_events(
    client: httpx.AsyncClient, server_factory: ServerFactory, tmp_path: Path
) -> None:
    trace = tmp_path / "traces" / "run.jsonl"
    server = server_factory(trace=str(trace))
    base = server.url
    room = new_room("traced")
    async with join(client, base, room) as a:
        await send_ok(client, base, a, a, {"n": 1})
        await a.stream.until("signal")
        with trio.fail_after(5):  # flushed while running, within about a second
            while True:
                if trace.exists() and b'"handled"' in trace.read_bytes():
                    break
                await trio.sleep(0.1)
    assert server.stop() == 0
    lines = trace.read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    kinds = {e["kind"] for e in events}
    assert {"activated", "handled", "stream_opened"} <= kinds
    assert all({"t", "kind", "ns", "actor"} <= set(e) for e in events)
    assert room not in trace.read_text()
    handled = [e for e in events if e["kind"] == "handled"]
    assert all(isinstance(e["took"], float | int) and e["ok"] is True for e in handled)


# --- logs ----------------------------------------------------------------------------------


async def _traffic(client: httpx.AsyncClient, base: str) -> set[str]:
    """Every way a token travels to the server; the tokens used."""
    room = new_room("logged")
    tokens: set[str] = set()
    async with join(client, base, room) as a, join(client, base, room) as b:
        tokens |= {a.token, b.token}
        await send_ok(client, base, a, b, {"sdp": "x"})
        body = {"sender": a.session_id, "to": b.session_id, "signal": {"n": 2}}
        by_header = await post(client, base, "signal", room, body, headers={"X-Token": a.token})
        assert by_header.status_code == 200
        bearer = {"Authorization": f"Bearer {a.token}"}
        assert (await post(client, base, "signal", room, body, headers=bearer)).status_code == 200
        wrong = str(uuid.uuid4())
        tokens.add(wrong)
        refused = await post(client, base, "signal", room, {**body, "token": wrong})
        assert refused.status_code == 403
        await sync(client, b)
        await client.get(f"{base}/nowhere/{a.token}", params={"token": a.token})
    # a reconnection with credentials in the query string, then a leave
    async with join(client, base, room, **_creds(a)) as again:
        assert again.resumed
        await leave(client, base, again)
    return tokens


def _creds(peer: Peer) -> dict[str, Any]:
    return {"session_id": peer.session_id, "token": peer.token}


async def test_json_logs_parse_and_hold_no_token(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    server = server_factory(log_level="debug", log_format="json")
    tokens = await _traffic(client, server.url)
    assert server.stop() == 0
    text = server.log()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert records, "no log lines"
    for record in records:
        assert {"ts", "level", "logger", "msg"} <= set(record), record
    for token in tokens:
        assert token not in text
    access = [r for r in records if r["logger"] == "roomkeeper.access"]
    signals = [r for r in access if r["route"] == "/api/signal"]
    assert len(signals) >= 4
    assert all(len(r["request_id"]) == 32 and len(r["actor"]) == 12 for r in signals)
    assert {r["status"] for r in signals} >= {200, 403}
    assert all(isinstance(r["duration_ms"], float | int) for r in access)


async def test_text_logs_hold_no_token_either(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    server = server_factory(log_level="debug")
    tokens = await _traffic(client, server.url)
    assert server.stop() == 0
    text = server.log()
    assert " DEBUG roomkeeper.access POST /api/signal 200 " in text
    for token in tokens:
        assert token not in text


async def test_request_id_is_echoed(client: httpx.AsyncClient, server: ServerProcess) -> None:
    given = await client.get(f"{server.url}/healthz", headers={"X-Request-Id": "lb-42.a"})
    assert given.headers["x-request-id"] == "lb-42.a"
    made = await client.get(f"{server.url}/healthz", headers={"X-Request-Id": "bad id;x"})
    assert made.headers["x-request-id"] != "bad id;x" and len(made.headers["x-request-id"]) == 32


async def test_the_collector_policy_is_counted_and_can_be_turned_off(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    names = ("roomkeeper_gc_full_scans_total", "roomkeeper_gc_frozen_scans_total")
    _, found = await scrape(client, server_factory().url)
    assert all((name, frozenset()) in found for name in names)
    _, found = await scrape(client, server_factory(gc_freeze="off").url)
    assert not any(name in found_name for name in names for found_name, _ in found)
