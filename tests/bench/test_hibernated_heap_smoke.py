"""The hibernated-room heap script (bench/hibernated_heap.py) runs and reports numbers.

Only a smoke test: a few rooms, and no assertion on the sizes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "hibernated_heap.py"


@pytest.mark.slow
def test_a_few_rooms_print_the_heap_kept_and_its_lines() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "100"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"^100 hibernated rooms; heap kept per room: -?[0-9]+ B$", done.stdout, re.M)
    assert re.search(r"^  +-?[0-9]+ B  runtime/[a-z_]+\.py:[0-9]+$", done.stdout, re.M), done.stdout
