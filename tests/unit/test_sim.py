"""The simulator: reproducible traces, the delivery check (and that it can fail), a day
of calls, workload files, and the `simulate` / `trace-report` commands."""

from __future__ import annotations

import json
import random
from array import array
from pathlib import Path
from typing import Any

import pytest

from roomkeeper.cli import main
from roomkeeper.sim import TraceStats, WorkloadError, load_workload, simulate
from roomkeeper.sim import plots as sim_plots
from roomkeeper.sim.engine import arrival_times, violations
from roomkeeper.sim.workload import parse_override
from roomkeeper_actors.signaling.session import Session

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = ROOT / "docs" / "workloads"
CALLS = WORKLOADS / "calls.toml"
FLAKY = WORKLOADS / "flaky.json"  # drops, lost chunks, short grace, small queues


def run(
    tmp_path: Path, seed: int = 1, rooms: int = 25, name: str = "t", memory: bool = False
) -> dict[str, Any]:
    workload = load_workload(FLAKY, [f"rooms={rooms}"])
    return simulate(workload, seed, tmp_path / f"{name}.jsonl", measure_memory=memory)


# -- reproducibility --------------------------------------------------------------------
def test_one_seed_one_trace_byte_for_byte_another_seed_another(tmp_path: Path) -> None:
    first = run(tmp_path, 5, 12, name="a")
    again = run(tmp_path, 5, 12, name="b", memory=True)  # measuring changes nothing
    other = run(tmp_path, 6, 12, name="c")
    a, b, c = ((tmp_path / f"{n}.jsonl").read_bytes() for n in "abc")
    assert a == b and a != c
    assert first["trace"]["sha256"] == again["trace"]["sha256"] != other["trace"]["sha256"]
    assert again["machine"]["peak_python_bytes"] > again["machine"]["peak_live_python_bytes"] > 0
    # (another process gives the same bytes: tests/integration/test_sim_processes.py)


def test_the_trace_agrees_with_the_runtime_counters(tmp_path: Path) -> None:
    summary = run(tmp_path)
    trace, counters = summary["runtime"], summary["snapshot"]
    assert trace["activations"] == counters["activations"] > 0
    assert trace["hibernations"] == counters["hibernations"] == trace["activations"]
    assert trace["wakes"] == counters["wakes"]
    envelopes = sum(trace["handled"].values()) - trace["handled"]["hibernate"] - trace["failed"]
    assert envelopes == counters["envelopes"]
    assert TraceStats.from_file(tmp_path / "t.jsonl").summary() == trace


# -- the delivery check -----------------------------------------------------------------
def test_a_flaky_network_loses_nothing_and_exercises_every_path(tmp_path: Path) -> None:
    summary = run(tmp_path)
    signals, peers = summary["signals"], summary["peers"]
    assert violations(summary) == {}
    assert signals["lost"] == signals["duplicated"] == 0
    assert signals["delivered"] + signals["undeliverable"] >= signals["accepted"]
    # the paths the check is there for were taken: chunks lost on the wire, replay by
    # Last-Event-ID, queues while away, sessions that expired, full queues (503)
    assert peers["chunks_lost_in_transit"] > 0 and signals["redelivered"] > 0
    assert peers["resumed_by_last_event_id"] > 0 and peers["expired_before_return"] > 0
    assert signals["undeliverable"] > 0 and signals["retried"] > 0


def test_the_check_catches_a_room_that_does_not_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Session, "take_history_after", lambda self, event_id: [])
    summary = run(tmp_path)
    assert summary["signals"]["lost"] > 0
    assert "lost" in violations(summary)


def test_the_check_catches_a_room_that_replays_too_much(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def everything(self: Session, event_id: int) -> list[Any]:
        return [out for _, out in self.history]

    monkeypatch.setattr(Session, "take_history_after", everything)
    summary = run(tmp_path)
    assert summary["signals"]["duplicated"] > 0


@pytest.mark.slow
def test_a_day_of_calls_in_a_thousand_rooms_loses_no_signal(tmp_path: Path) -> None:
    """docs/workloads/calls.toml as shipped: 1,000 rooms over 24 simulated hours."""
    workload = load_workload(CALLS)
    assert (workload.rooms, workload.hours) == (1000, 24)
    summary = simulate(workload, 1, tmp_path / "calls.jsonl", measure_memory=False)
    runtime, signals = summary["runtime"], summary["signals"]
    assert violations(summary) == {}
    assert signals["lost"] == signals["duplicated"] == 0
    assert signals["accepted"] > 100_000 and signals["redelivered"] > 0
    assert runtime["actors"] == summary["peers"]["rooms"] == 1000
    assert runtime["hours"] >= 23
    assert runtime["wakes"] == summary["snapshot"]["wakes"]
    assert summary["storage"]["stored_bytes_at_end"] == 0  # ended rooms keep nothing


# -- workloads --------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(WORKLOADS.iterdir()), ids=lambda p: p.name)
def test_shipped_workloads_load(path: Path) -> None:
    workload = load_workload(path)
    assert workload.name == path.stem


def test_toml_and_json_workloads_mean_the_same(tmp_path: Path) -> None:
    toml = tmp_path / "w.toml"
    toml.write_text(
        'rooms = 3\n[room]\nsize = {dist = "choice", values = [2, 3], weights = [1, 1]}\n'
        "[runtime]\nhibernate_after = 1.5\n"
    )
    as_json = tmp_path / "w.json"
    body = {
        "rooms": 3,
        "room": {"size": {"dist": "choice", "values": [2, 3], "weights": [1, 1]}},
        "runtime": {"hibernate_after": 1.5},
    }
    as_json.write_text(json.dumps(body))
    assert load_workload(toml) == load_workload(as_json)
    assert load_workload(toml).grace == 30.0  # a default


def test_overrides() -> None:
    assert parse_override("runtime.hibernate_after=1") == ("runtime.hibernate_after", 1)
    assert parse_override('session.length={dist="exponential", mean=60}')[1] == {
        "dist": "exponential",
        "mean": 60,
    }
    assert parse_override("name=plain words") == ("name", "plain words")
    workload = load_workload(CALLS, ["runtime.hibernate_after=60", "rooms=7"])
    assert (workload.hibernate_after, workload.rooms) == (60.0, 7)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("rooms = 0", "rooms"),
        ("bogus = 1", "unknown setting 'bogus'"),
        ("[drop]\nprobability = 2", "drop.probability"),
        ('[room]\nsize = {dist = "exponential", mean = 2}', "room.size"),
        ('[session]\nlength = {dist = "gamma", k = 2}', "session.length"),
        ('[session]\nlength = {dist = "uniform", low = 5, high = 1}', "low must not exceed"),
        ("[runtime]\nhibernate_after = 0", "runtime.hibernate_after"),
        ("[arrival]\nprofile = [0, 0]", "arrival.profile"),
        ("runtime = 3", "runtime: must be a table"),
        ("rooms = [", "not valid TOML"),
    ],
)
def test_bad_workloads_say_what_is_wrong(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(WorkloadError, match=message.replace("[", r"\[")):
        load_workload(path)


def test_arrivals_count_window_and_profile() -> None:
    base = load_workload(CALLS, ["rooms=500"])
    times = arrival_times(base, random.Random(1))
    assert len(times) == 500 and times == sorted(times)
    assert times[0] >= 0 and times[-1] < 24 * 3600
    night = sum(1 for t in times if t % 86400 < 5 * 3600)
    assert night < 0.1 * len(times)  # the profile: few calls before 05:00
    flat = ["rooms=100000", "arrival.per_hour=100", "hours=2", "arrival.profile=[]"]
    count = len(arrival_times(load_workload(CALLS, flat), random.Random(1)))
    assert 150 < count < 250  # a Poisson process stopped by the window, not the count
    night = load_workload(CALLS, ["rooms=100000", "arrival.per_hour=100", "hours=2"])
    assert len(arrival_times(night, random.Random(1))) < 60  # 00:00-02:00 weigh 1 of 8.8


# -- the commands ---------------------------------------------------------------------
def test_simulate_command_prints_and_writes_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace, out = tmp_path / "t.jsonl", tmp_path / "s.json"
    argv = ["simulate", str(FLAKY), "--seed", "2", "--trace", str(trace), "--summary", str(out)]
    assert main([*argv, "--set", "rooms=5"]) == 0
    printed = capsys.readouterr().out
    for row in ("peak live actors", "wakes by alarm", "signals lost", "peak Python memory"):
        assert row in printed
    summary = json.loads(out.read_text())
    assert summary["workload"] == {
        "name": "flaky",
        "seed": 2,
        "settings": summary["workload"]["settings"],
    }
    assert summary["machine"]["peak_python_bytes"] > 0
    assert summary["trace"]["sha256"] and trace.stat().st_size > 0


def test_simulate_command_fails_when_a_signal_is_lost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Session, "take_history_after", lambda self, event_id: [])
    trace = str(tmp_path / "t.jsonl")
    argv = ["simulate", str(FLAKY), "--seed", "1", "--trace", trace, "--no-tracemalloc"]
    assert main([*argv, "--set", "rooms=25"]) == 1
    assert "delivery check failed" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate"],
        ["simulate", str(FLAKY), "--trace", "t.jsonl"],  # no --seed
        ["simulate", str(FLAKY), "--seed", "x", "--trace", "t.jsonl"],
        ["simulate", "missing.toml", "--seed", "1", "--trace", "t.jsonl"],
        ["simulate", str(FLAKY), "--seed", "1", "--trace", "t.jsonl", "--set", "nope=1"],
        ["simulate", str(FLAKY), "--seed", "1", "--trace", "t.jsonl", "--set", "junk"],
        ["simulate", str(FLAKY), "--seed", "1", "--trace", "/no/such/dir/t.jsonl"],
        ["simulate", str(FLAKY), "--seed", "1", "--trace", "t.jsonl", "--summary", "/no/x.json"],
        ["trace-report"],
        ["trace-report", "missing.jsonl"],
        ["trace-report", str(CALLS)],  # not a trace
    ],
)
def test_bad_arguments_one_line_status_2(
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        status = main(argv)
    except SystemExit as exit:
        status = exit.code  # type: ignore[assignment]
    assert status == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("roomkeeper"), err


def test_trace_report_prints_the_summary_and_says_plots_need_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = run(tmp_path)
    capsys.readouterr()

    def absent() -> None:
        raise sim_plots.PlotsUnavailable("plots need matplotlib: pip install 'roomkeeper[plot]'")

    monkeypatch.setattr(sim_plots, "pyplot", absent)
    assert main(["trace-report", str(tmp_path / "t.jsonl"), "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert f"peak live actors        {summary['runtime']['peak_live']}" in out
    assert "roomkeeper[plot]" in err
    assert not list(tmp_path.glob("*.png"))


def test_trace_report_draws_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # matplotlib comes with the test extra (through roomkeeper[plot]): no skip
    run(tmp_path)
    assert main(["trace-report", str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "p")]) == 0
    pngs = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert pngs == ["t-actors.png", "t-latency.png", "t-wakes.png"]
    for name in pngs:
        assert (tmp_path / "p" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out


def test_binned_step_function() -> None:
    peak, mean = sim_plots.binned([0.0, 0.5, 1.5], array("l", [2, 4, 0]), 1.0, 2)
    assert peak == [4, 4] and mean == [3.0, 2.0]
