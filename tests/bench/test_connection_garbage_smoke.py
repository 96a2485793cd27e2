"""The connection-garbage script (bench/connection_garbage.py) runs and reports numbers.

Only a smoke test: a few rooms, and no assertion on the counts.
"""

from __future__ import annotations

import re

import pytest

from ..support.scripts import run_bench


@pytest.mark.slow
def test_a_few_rooms_print_what_the_collector_found() -> None:
    out = run_bench("connection_garbage.py", "--rooms", "20")
    assert re.search(r"^20 rooms: [0-9]+ unreachable objects, [0-9.]+ a room$", out, re.M), out
