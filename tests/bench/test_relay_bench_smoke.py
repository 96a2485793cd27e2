"""The relay load generator (bench/loadgen.py) runs against a real roomkeeper and reports.

Only a smoke test: ``--quick`` runs for a couple of seconds, and nothing here depends on
how fast the machine is (no timing assertion), only on the generator speaking the
protocol and printing its ``RESULT`` line with numbers in it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

UNLIMITED = [
    "--rate-burst",
    "1000000",
    "--rate-refill",
    "1000000",
    "--new-sessions-per-minute",
    "1000000",
    "--new-sessions-burst",
    "1000000",
    "--streams-per-address",
    "100000",
]


def start(cmd: list[str], tmp_path: Path, name: str) -> tuple[subprocess.Popen[bytes], str]:
    out = tmp_path / f"{name}.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = re.search(r"serving on (http://\S+)", out.read_text())
        if match:
            return proc, match.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{name} did not start:\n{out.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def roomkeeper(tmp_path: Path) -> Iterator[tuple[str, int]]:
    cmd = [sys.executable, "-m", "roomkeeper", "serve", "--storage", "memory", "--port", "0"]
    cmd += ["--log-level", "warning", "--hibernate-after", "1", "--grace", "600", *UNLIMITED]
    proc, url = start(cmd, tmp_path, "roomkeeper")
    try:
        yield url, proc.pid
    finally:
        stop(proc)


@pytest.fixture
def baseline(tmp_path: Path) -> Iterator[tuple[str, int]]:
    proc, url = start(
        [sys.executable, str(BENCH / "baseline_app.py"), "--port", "0"], tmp_path, "baseline"
    )
    try:
        yield url, proc.pid
    finally:
        stop(proc)


def loadgen(mode: str, url: str, pid: int, *extra: str) -> dict[str, Any]:
    cmd = [sys.executable, str(BENCH / "loadgen.py"), mode, "--quick", "--url", url]
    done = subprocess.run(
        [*cmd, "--pid", str(pid), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return result


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@pytest.mark.slow
def test_throughput_and_latency_against_roomkeeper(roomkeeper: tuple[str, int]) -> None:
    url, pid = roomkeeper
    result = loadgen("throughput", url, pid)
    assert result["protocol"] == "roomkeeper"
    assert is_number(result["signals_per_s"]) and result["signals_per_s"] > 0
    assert result["statuses"].get("200", 0) > 0
    assert result["latency_ms"]["n"] > 0
    for key in ("p50", "p90", "p99", "max"):
        assert is_number(result["latency_ms"][key])
    assert is_number(result["gen_cpu_pct"])

    result = loadgen("latency", url, pid, "--rate", "50,100")
    assert [r["rate"] for r in result["rates"]] == [50.0, 100.0]
    for point in result["rates"]:
        assert point["latency_ms"]["n"] > 0 and is_number(point["latency_ms"]["p99"])


@pytest.mark.slow
def test_capacity_storm_and_hibernation_against_roomkeeper(
    roomkeeper: tuple[str, int],
) -> None:
    url, pid = roomkeeper
    result = loadgen("storm", url, pid, "--streams", "50", "--idle", "1")
    assert result["streams"] == 50
    assert is_number(result["streams_per_s"]) and is_number(result["kb_per_stream"])
    assert is_number(result["idle_server_cpu_pct"])
    assert result["storm_back"] == 50 and is_number(result["storm_seconds"])

    result = loadgen("hibernation", url, pid, "--rooms", "100", "--sample", "5")
    assert result["rooms"] == 100
    assert is_number(result["bytes_per_room"])
    assert result["wake_ms"]["n"] == 5 and is_number(result["wake_ms"]["p99"])


@pytest.mark.slow
def test_throughput_against_the_baseline(baseline: tuple[str, int]) -> None:
    url, pid = baseline
    result = loadgen("throughput", url, pid, "--protocol", "baseline")
    assert result["protocol"] == "baseline"
    assert result["signals_per_s"] > 0 and result["latency_ms"]["n"] > 0
