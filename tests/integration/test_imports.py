"""What importing a layer loads, in a fresh interpreter: ``roomkeeper.observe`` loads
nothing from the HTTP layer above it, nor the application."""

from __future__ import annotations

import json
import subprocess
import sys


def loaded_by(module: str) -> set[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout))


def test_observe_loads_neither_http_nor_the_application() -> None:
    loaded = loaded_by("roomkeeper.observe")
    assert "roomkeeper.observe.admin" in loaded  # the check would see a wrong import
    bad = sorted(m for m in loaded if m.startswith(("roomkeeper.http", "roomkeeper_actors")))
    assert not bad, bad


def test_the_runtime_loads_nothing_above_it() -> None:
    loaded = loaded_by("roomkeeper.runtime")
    above = ("roomkeeper.http", "roomkeeper.observe", "roomkeeper.signaling", "roomkeeper_actors")
    assert not sorted(m for m in loaded if m.startswith(above))
