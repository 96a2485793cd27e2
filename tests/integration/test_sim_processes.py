"""The simulator's trace does not depend on the process: another process, with another
string hash seed and other memory addresses, writes the same bytes for the same seed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from roomkeeper.sim import load_workload, simulate

ROOT = Path(__file__).resolve().parents[2]
FLAKY = ROOT / "docs" / "workloads" / "flaky.json"


def test_another_process_writes_the_same_trace(tmp_path: Path) -> None:
    simulate(load_workload(FLAKY, ["rooms=12"]), 5, tmp_path / "here.jsonl")
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    argv = [sys.executable, "-m", "roomkeeper", "simulate", str(FLAKY), "--seed", "5"]
    argv += ["--trace", str(tmp_path / "there.jsonl"), "--set", "rooms=12", "--no-tracemalloc"]
    subprocess.run(argv, env=env, check=True, capture_output=True)
    assert (tmp_path / "there.jsonl").read_bytes() == (tmp_path / "here.jsonl").read_bytes()
