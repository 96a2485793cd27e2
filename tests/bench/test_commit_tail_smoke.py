"""The commit-latency benchmark (bench/commit_tail.py) runs and reports numbers.

Only a smoke test: one small round, and no timing assertion.
"""

from __future__ import annotations

import re

from ..support.scripts import run_bench

MS = r"[0-9]+\.[0-9]{2} ms"


def test_one_small_round_prints_its_figures() -> None:
    out = run_bench("commit_tail.py", "--rounds", "1", "--actors", "600", "--seconds", "1")
    assert re.search(
        rf"^round 1: p50 {MS}, p99 {MS}, max {MS}, WAL [0-9.]+ MiB, background checkpoints [1-9]",
        out,
        re.MULTILINE,
    ), out
    assert re.search(rf"^median: p50 {MS}, p99 {MS}, max {MS}$", out, re.MULTILINE)
