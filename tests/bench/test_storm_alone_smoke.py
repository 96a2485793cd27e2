"""bench/storm_alone.py runs end to end: a small storm against roomkeeper."""

from __future__ import annotations

import json

import pytest

from ..support.scripts import run_bench


@pytest.mark.slow
def test_a_small_storm_brings_every_client_back() -> None:
    out = run_bench("storm_alone.py", "--streams", "40", "--no-pin", timeout=180)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["storm_back_s"]["n"] == 40, result
    assert result["storm_server_cpu_s"] >= 0, result
