"""The trace file: JSON lines while the block runs, flushed, closed, and never a danger
to the runtime."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from roomkeeper.config import ConfigError
from roomkeeper.http.app import ROOMS
from roomkeeper.http.codec import SseCodec
from roomkeeper.observe import Guarded, trace_to_file
from roomkeeper.runtime import ActorSystem, Binding, MemoryBackend, TraceEvent, open_actor_system
from roomkeeper_actors.signaling.messages import Connect, Inspect


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    async with open_actor_system(
        {ROOMS: Binding("roomkeeper_actors.signaling.room:Room")},
        codec=SseCodec(1000),
        backend=MemoryBackend(),
    ) as system:
        yield system


async def test_events_become_json_lines(system: ActorSystem, tmp_path: Path) -> None:
    path = tmp_path / "deep" / "trace.jsonl"
    async with trace_to_file(system, path, flush_every=0.01) as writer:
        assert writer is not None
        await system.get(ROOMS, "r").ask(Connect())
        await system.get(ROOMS, "r").ask(Inspect())
        await trio.sleep(0.05)
        flushed = path.read_bytes()  # the periodic flush wrote them already
        assert flushed.count(b"\n") == writer.count >= 3
    assert system.observers == []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    kinds = [line["kind"] for line in lines]
    assert kinds[0] == "activated" and "handled" in kinds and "stream_opened" in kinds
    assert all(line["ns"] == ROOMS and len(line["actor"]) == 64 for line in lines)
    assert "r" not in {line["actor"] for line in lines}  # ids, never names


async def test_the_file_is_emptied_first(system: ActorSystem, tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text("old\n")
    async with trace_to_file(system, path):
        pass
    assert path.read_text() == ""


async def test_an_empty_path_writes_nothing(system: ActorSystem) -> None:
    async with trace_to_file(system, "") as writer:
        assert writer is None
        assert system.observers == []


async def test_an_unwritable_path_is_a_config_error(system: ActorSystem, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="--trace: cannot write"):
        async with trace_to_file(system, blocker / "trace.jsonl"):
            pass  # pragma: no cover


def test_a_failing_observer_is_logged_once_and_silenced(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def broken(event: TraceEvent) -> None:
        calls.append(event)
        raise OSError(28, "No space left on device")

    guarded = Guarded(broken)
    event = TraceEvent(0.0, "activated", ROOMS, "ab" * 32)
    guarded(event)
    guarded(event)
    assert len(calls) == 1 and guarded.failed
    assert [r.levelname for r in caplog.records] == ["ERROR"]
