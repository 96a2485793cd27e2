"""The commit-latency benchmark (bench/commit_tail.py) runs and reports numbers.

Only a smoke test: one small round, and no timing assertion.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "commit_tail.py"

MS = r"[0-9]+\.[0-9]{2} ms"


def test_one_small_round_prints_its_figures() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--rounds", "1", "--actors", "600", "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(
        rf"^round 1: p50 {MS}, p99 {MS}, max {MS}, WAL [0-9.]+ MiB, background checkpoints [1-9]",
        done.stdout,
        re.MULTILINE,
    ), done.stdout
    assert re.search(rf"^median: p50 {MS}, p99 {MS}, max {MS}$", done.stdout, re.MULTILINE)
