"""Running the scripts in bench/ as their users do, for their smoke tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run_bench(script: str, *args: str, timeout: float = 120) -> str:
    """``python bench/<script> args...`` with this interpreter: its stdout, once it has
    exited with 0 (a failure shows its stderr)."""
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
