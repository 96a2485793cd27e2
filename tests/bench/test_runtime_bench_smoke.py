"""The runtime benchmark (bench/runtime_bench.py) runs and reports numbers.

Only a smoke test: ``--quick`` is one tiny round, and nothing here depends on how fast
the machine is (no timing assertion), only on the script running to the end.
"""

from __future__ import annotations

import re

import pytest

from ..support.scripts import run_bench

NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?"


def row(label: str) -> str:
    """A table row that starts with ``label`` and whose next cell is a number."""
    return rf"^\| {re.escape(label)} +\| +{NUMBER}"


@pytest.mark.slow
def test_quick_benchmark_runs_and_prints_its_tables() -> None:
    out = run_bench("runtime_bench.py", "--quick", "--no-pin", timeout=180)
    assert out.startswith("# roomkeeper runtime benchmark (quick)")
    assert "machine: " in out
    for label in (
        "ask, 1 asker, no writes",
        "ask, 10 concurrent askers, no writes",
        "tell (batches of 512), no writes",
        "ask + 1 write, memory",
        "ask + 1 write, SQLite normal",
        "ask + 1 write, SQLite full (fsync)",
        "SQLite",
        "memory",
        "activation rate",
        "Python heap kept per hibernated actor",
        "RSS growth per hibernated actor, after gc",
        "peak RSS growth",
    ):
        assert re.search(row(label), out, re.MULTILINE), f"no number for {label!r}:\n{out}"
    assert re.search(rf"^took {NUMBER} s$", out, re.MULTILINE)
