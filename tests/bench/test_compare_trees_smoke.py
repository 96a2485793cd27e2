"""bench/compare_trees.py runs end to end: this checkout against itself, briefly."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..support.scripts import run_bench

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_compare_trees_prints_both_medians_and_their_ratio() -> None:
    out = run_bench(
        "compare_trees.py",
        *("--base", str(ROOT), "--new", str(ROOT), "--rounds", "1", "--streams", "40"),
        "--no-pin",
        timeout=180,
    )
    assert "base median:" in out and "new median:" in out, out
    assert "new/base:" in out, out
