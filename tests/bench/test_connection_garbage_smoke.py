"""The connection-garbage script (bench/connection_garbage.py) runs and reports numbers.

Only a smoke test: a few rooms, and no assertion on the counts.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "connection_garbage.py"


@pytest.mark.slow
def test_a_few_rooms_print_what_the_collector_found() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--rooms", "20"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"^20 rooms: [0-9]+ unreachable objects, [0-9.]+ a room$", done.stdout, re.M)
