"""The hibernated-room heap script (bench/hibernated_heap.py) runs and reports numbers.

Only a smoke test: a few rooms, and no assertion on the sizes.
"""

from __future__ import annotations

import re

import pytest

from ..support.scripts import run_bench


@pytest.mark.slow
def test_a_few_rooms_print_the_heap_kept_and_its_lines() -> None:
    out = run_bench("hibernated_heap.py", "100")
    assert re.search(r"^100 hibernated rooms; heap kept per room: -?[0-9]+ B$", out, re.M)
    assert re.search(r"^  +-?[0-9]+ B  runtime/[a-z_]+\.py:[0-9]+$", out, re.M), out
