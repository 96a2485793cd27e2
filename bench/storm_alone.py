#!/usr/bin/env python
"""A reconnect storm against one server alone, as ``relay_bench.py``'s idle round runs it
(``loadgen.py storm --wait-restart``: open the streams, restart the server, every client
reconnects at once), with the server's CPU from its restart until the storm is over.

    python bench/storm_alone.py                  # roomkeeper serve, 10,000 clients
    python bench/storm_alone.py --kind baseline  # the bare quart-trio baseline
"""

from __future__ import annotations

import argparse
import json
import time

import relay_bench


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=[relay_bench.RK, relay_bench.BL], default=relay_bench.RK)
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    args = parser.parse_args()
    bench = argparse.Namespace(no_pin=args.no_pin, server_cpu="0", gen_cpu="1", quick=False)
    server = relay_bench.Server(args.kind, bench)
    with relay_bench.running(server):
        time.sleep(1.0)
        extra = ["--streams", str(args.streams), "--concurrency", "64"]
        result = relay_bench.storm(bench, server, extra, 900)
    keys = ["streams_per_s", "storm_seconds", "storm_back_s", "storm_retries", "storm_errors"]
    out = {key: result.get(key) for key in [*keys, "storm_gen_cpu_pct", "storm_server_cpu_s"]}
    if result.get("storm_seconds"):
        cpu_pct = 100 * result["storm_server_cpu_s"] / result["storm_seconds"]
        out["server_cpu_pct"] = round(cpu_pct, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
