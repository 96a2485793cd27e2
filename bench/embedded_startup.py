"""How long `roomkeeper.testing.serve()` takes from the call to the first answered request.

Each run enters ``serve()`` (a new thread with its own trio loop, the actor system and
Hypercorn on a free port), then GETs ``/healthz`` until it answers 200; the clock stops
there. Stopping the server is timed separately. Imports happen once, before any run;
a few cold runs in fresh processes show what the first server of a test session costs
with its imports (Quart, Hypercorn, the runtime).

    python bench/embedded_startup.py [--runs 20] [--cold-runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import httpx

from roomkeeper.testing import serve


def one_run(client: httpx.Client) -> tuple[float, float]:
    """Seconds to the first 200 from /healthz, and seconds to stop."""
    start = time.perf_counter()
    with serve() as server:
        while client.get(f"{server.url}/healthz").status_code != 200:
            pass
        ready = time.perf_counter()
    return ready - start, time.perf_counter() - ready


COLD = """
import time
start = time.perf_counter()
import httpx
from roomkeeper.testing import serve
with serve() as server:
    assert httpx.get(server.url + "/healthz").status_code == 200
    print(time.perf_counter() - start)
"""


def cold_run() -> float:
    """Seconds from importing roomkeeper.testing to the first 200, in a new process."""
    out = subprocess.run([sys.executable, "-c", COLD], capture_output=True, text=True, check=True)
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cold-runs", type=int, default=3)
    args = parser.parse_args()
    with httpx.Client(timeout=10) as client:
        one_run(client)  # warm-up: first-time imports inside the server's thread
        runs = [one_run(client) for _ in range(args.runs)]
    starts = [s * 1000 for s, _ in runs]
    stops = [t * 1000 for _, t in runs]
    print(f"serve() start-up to first successful request, {args.runs} runs:")
    print(
        f"  median {statistics.median(starts):.1f} ms"
        f"  (min {min(starts):.1f}, max {max(starts):.1f})"
    )
    print(f"stop (graceful), median {statistics.median(stops):.1f} ms  (max {max(stops):.1f})")
    if args.cold_runs:
        cold = [cold_run() * 1000 for _ in range(args.cold_runs)]
        print(
            f"cold, imports included ({args.cold_runs} fresh processes): "
            f"median {statistics.median(cold):.0f} ms"
        )


if __name__ == "__main__":
    main()
