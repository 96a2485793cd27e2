#!/usr/bin/env python
"""``roomkeeper serve`` with the cyclic collector timed: on SIGUSR1, and at exit, one line
on stderr with the collections by generation and the seconds they took since start.

    python bench/gc_timed_serve.py serve --port 8931 --storage memory ... &
    python bench/loadgen.py capacity --url http://127.0.0.1:8931 --pid $! --idle 0 ...
    kill -USR1 $!    # GC collections [g0, g1, g2] seconds [g0, g1, g2] collected N

``GC_THRESHOLD=a,b,c`` sets ``gc.set_threshold`` before the server starts (with
``--gc-freeze on`` its policy then sets the youngest generation's own).
"""

from __future__ import annotations

import atexit
import gc
import os
import signal
import sys
import time
from typing import Any

counts = [0, 0, 0]
seconds = [0.0, 0.0, 0.0]
collected = 0
started = 0.0


def timed(phase: str, info: dict[str, Any]) -> None:
    global started, collected
    if phase == "start":
        started = time.perf_counter()
        return
    generation = info["generation"]
    counts[generation] += 1
    seconds[generation] += time.perf_counter() - started
    collected += info["collected"]


def report(*_: Any) -> None:
    shown = [round(s, 3) for s in seconds]
    print(f"GC collections {counts} seconds {shown} collected {collected}", file=sys.stderr)
    sys.stderr.flush()


if __name__ == "__main__":
    gc.callbacks.insert(0, timed)  # first: a policy's own callback is timed with it
    if os.environ.get("GC_THRESHOLD"):
        gc.set_threshold(*(int(n) for n in os.environ["GC_THRESHOLD"].split(",")))
    signal.signal(signal.SIGUSR1, report)
    atexit.register(report)
    from roomkeeper.cli import main

    sys.exit(main(sys.argv[1:]))
