"""Fuzzing from the OpenAPI document (schemathesis) against a real server: for
every operation, generated requests that follow the document and requests that break it
(negative mode); every answer must be no 5xx, a status the document lists for the
operation, with its content type, headers and body schema. Bounded: a fixed number of
examples per operation, so it runs in CI in seconds.

Random credentials only ever meet a 403, so some requests carry real ones: a session
that stays connected (its stream is read in a thread), for signals; fresh sessions, for
leaves. Event streams are checked from their status and headers, then closed (a stream
never ends by itself).

The document is read from the package (schemathesis loads it when this module is
imported, before any server runs; its pytest fixture loader does not work with pytest 9)
and checked to be the very document the server serves at /openapi.json.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from importlib import resources
from typing import Any

import attrs
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from .conftest import ServerProcess, start_shared

EXAMPLES = 60
FLAGS = {
    "max_peers": "4",  # rooms fill up: 409 is answered too
    "queue_limit": "4",  # 503 for a peer that is away
    "rate_burst": "40",  # 429 once a session has sent enough
    "rate_refill": "20",
    "grace": "1",
}


SEEN: dict[str, Counter[int]] = {}
"""The statuses each operation answered, for the last test of the module."""


@attrs.define
class Session:
    room: str
    session_id: str
    token: str


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_shared(tmp_path_factory.mktemp("fuzz"), **FLAGS)
    yield server
    server.kill()


def _open(url: str, room: str) -> tuple[Session, requests.Response, Iterator[bytes]]:
    """A new session; its stream, and the iterator over its lines (read on with that
    one: a second iterator over a response finds it consumed)."""
    response = requests.get(f"{url}/api/connect", params={"room": room}, stream=True, timeout=10)
    assert response.status_code == 200, response.text
    lines = response.iter_lines()
    for line in lines:
        if line.startswith(b"data:"):
            data = json.loads(line[5:])
            return Session(room, data["session_id"], data["token"]), response, lines
    raise AssertionError("the stream ended before its session event")


@pytest.fixture(scope="module")
def live(fuzz_server: ServerProcess) -> Iterator[Session]:
    """A session of room ``fuzz-live`` whose stream stays open, drained in a thread."""
    session, response, lines = _open(fuzz_server.url, "fuzz-live")

    def drain() -> None:
        try:
            for _ in lines:
                pass
        except Exception:  # the response is closed under it at teardown
            pass

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    yield session
    response.close()
    thread.join(5)


DOCUMENT = json.loads(resources.files("roomkeeper.http").joinpath("openapi.json").read_text())
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES
)


@pytest.fixture(scope="module")
def base(fuzz_server: ServerProcess) -> str:
    """The server's URL, once it is shown to serve the document fuzzed here."""
    served = requests.get(f"{fuzz_server.url}/openapi.json", timeout=10)
    assert served.status_code == 200 and served.json() == DOCUMENT
    return fuzz_server.url


def _coin(case: Any) -> bool:
    """A stable half of the cases that follow the document (by their content), to carry
    real credentials (in a case that breaks it, they could mend what it broke)."""
    if case.meta is None or case.meta.generation.mode is not GenerationMode.POSITIVE:
        return False
    return zlib.crc32(repr((case.body, case.query, case.headers)).encode()) % 2 == 0


def _with_real_credentials(case: Any, session: Session) -> None:
    case.query = {**(case.query or {}), "room": session.room}
    if isinstance(case.body, dict):
        if "sender" in case.body:
            case.body["sender"] = session.session_id
        if "token" in case.body:
            case.body["token"] = session.token
        if "to" in case.body:
            case.body["to"] = session.session_id  # to yourself: allowed
    headers = case.headers or {}
    for name in ("X-Token",):
        if name in headers:
            headers[name] = session.token
    if "Authorization" in headers:
        headers["Authorization"] = f"Bearer {session.token}"


def _check_stream(case: Any, response: requests.Response) -> None:
    """A 200 event stream: status, content type and headers, from the first bytes."""
    documented = case.operation.definition.raw["responses"]["200"]
    assert response.headers["Content-Type"] == "text/event-stream"
    for header in documented["headers"]:
        assert header in response.headers, header
    first = next(response.iter_content(64))
    assert first.startswith(b"retry: ")


@schema.parametrize()
@settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_answer_keeps_the_documented_contract(
    case: Any, base: str, fuzz_server: ServerProcess, live: Session
) -> None:
    if case.method == "POST" and case.path == "/api/signal" and _coin(case):
        _with_real_credentials(case, live)
    if case.method == "POST" and case.path == "/api/leave" and _coin(case):
        session, stream, _ = _open(fuzz_server.url, "fuzz-leave")
        stream.close()
        _with_real_credentials(case, session)
    if case.method == "GET" and case.path == "/api/connect":
        kwargs = case.as_transport_kwargs(base_url=base)
        with requests.request(**kwargs, stream=True, timeout=10) as response:
            SEEN.setdefault(f"{case.method} {case.path}", Counter())[response.status_code] += 1
            if response.status_code == 200:
                _check_stream(case, response)
                return
            response.content  # noqa: B018  (an error answer: read it whole)
        case.validate_response(response, excluded_checks=[positive_data_acceptance])
        return
    response = case.call_and_validate(
        base_url=base, timeout=10, excluded_checks=[positive_data_acceptance]
    )
    SEEN.setdefault(f"{case.method} {case.path}", Counter())[response.status_code] += 1


def test_the_fuzzing_went_past_the_front_door() -> None:
    """Random input mostly meets a 400 or a 403: the real credentials above must have
    taken some requests all the way (and a full room or a spent budget some others)."""
    if not SEEN:
        pytest.skip("the fuzzing test did not run")
    assert {200, 400, 403} <= set(SEEN["POST /api/signal"]), SEEN
    assert {200, 400, 403} <= set(SEEN["POST /api/leave"]), SEEN
    assert {200, 400} <= set(SEEN["GET /api/connect"]), SEEN
    assert all(status < 500 for counts in SEEN.values() for status in counts), SEEN
