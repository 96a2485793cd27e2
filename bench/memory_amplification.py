#!/usr/bin/env python
"""Memory held for stored signals (issue 15 item 1): RSS before and after a sender posts
signals whose payload is ``{"x": [{}, {}, ...]}`` just under the body limit to a receiver
whose stream is read and discarded.

    python bench/memory_amplification.py                       # 256 signals, this tree
    python bench/memory_amplification.py --signals 60 --before cd91f5c
    python bench/memory_amplification.py --flags "--session-bytes 67108864"

Prints, per server: RSS before and after (``VmRSS``), bytes accepted (the payloads of the
signals answered 200), bytes held (``roomkeeper_memory_held_bytes`` in /metrics, where the
server has it), and RSS growth and bytes held per byte accepted. ``--before REF`` also
runs a commit of this repository (a temporary ``git worktree``) for comparison. RSS is
read after the last 200 and a short settle; the server's storage is a fresh SQLite file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import trio

ROOT = Path(__file__).resolve().parent.parent
MAX_BODY = 102_400
UNLIMITED = ["--rate-burst", "1000000", "--rate-refill", "1000000"]


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@contextlib.contextmanager
def serving(src: Path, flags: list[str]) -> Iterator[tuple[str, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "roomkeeper", "serve", "--port", "0"]
        cmd += ["--storage", str(Path(tmp) / "rooms.sqlite3"), "--log-level", "warning"]
        cmd += ["--hibernate-after", "600", *UNLIMITED, *flags]
        env = {**os.environ, "PYTHONPATH": str(src)}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if "serving on" not in line:
                raise RuntimeError(f"server did not start: {line!r}")
            yield line.split("serving on ", 1)[1].strip(), proc.pid
        finally:
            proc.terminate()
            proc.wait(30)


async def held(client: httpx.AsyncClient, url: str) -> int | None:
    for line in (await client.get(f"{url}/metrics")).text.splitlines():
        if line.startswith("roomkeeper_memory_held_bytes{"):
            return int(float(line.rsplit(" ", 1)[1]))
    return None


async def run(url: str, pid: int, signals: int) -> dict[str, float | int | None]:
    """Two sessions; the receiver's stream read and discarded; ``signals`` posts."""
    async with httpx.AsyncClient(timeout=30) as client, trio.open_nursery() as nursery:
        joined = trio.Event()
        info: dict[str, str] = {}

        async def receiver(name: str) -> None:
            params = {"room": "amplification"}
            async with client.stream("GET", f"{url}/api/connect", params=params) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: ") and "session_id" in line and name not in info:
                        data = orjson.loads(line[6:])
                        info[name], info[name + "_token"] = data["session_id"], data["token"]
                        if "a" in info and "b" in info:
                            joined.set()

        nursery.start_soon(receiver, "a")
        nursery.start_soon(receiver, "b")
        await joined.wait()
        await trio.sleep(1)
        before = rss(pid)
        elements = (MAX_BODY - 200) // 3
        payload = orjson.dumps({"x": [{}] * elements})
        accepted = 0
        for _ in range(signals):
            body = b'{"sender":"%s","to":"%s","token":"%s","signal":%s}' % (
                info["a"].encode(),
                info["b"].encode(),
                info["a_token"].encode(),
                payload,
            )
            response = await client.post(
                f"{url}/api/signal",
                params={"room": "amplification"},
                content=body,
                headers={"Content-Type": "application/json"},
            )
            if response.status_code == 200:
                accepted += len(payload)
        await trio.sleep(1)
        after = rss(pid)
        holding = await held(client, url)
        nursery.cancel_scope.cancel()
    return {
        "rss_before_mb": round(before / 2**20, 1),
        "rss_after_mb": round(after / 2**20, 1),
        "accepted_mb": round(accepted / 2**20, 2),
        "held_mb": None if holding is None else round(holding / 2**20, 2),
        "rss_growth_per_byte_accepted": round((after - before) / accepted, 2),
        "held_per_byte_accepted": None if holding is None else round(holding / accepted, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signals", type=int, default=256)
    parser.add_argument("--flags", default="", help="extra server flags for this tree")
    parser.add_argument("--before", help="a commit to run too, for comparison")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}", file=sys.stderr)
    trees = [("this tree", ROOT / "src", shlex.split(args.flags))]
    with contextlib.ExitStack() as stack:
        if args.before:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "before"
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(tmp), args.before],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            stack.callback(
                subprocess.run,
                ["git", "worktree", "remove", "--force", str(tmp)],
                cwd=ROOT,
                check=False,
            )
            trees.insert(0, (args.before, tmp / "src", []))
        for label, src, flags in trees:
            with serving(src, flags) as (url, pid):
                started = time.monotonic()
                result = trio.run(run, url, pid, args.signals)
            print(f"{label} {' '.join(flags)}: {result} ({time.monotonic() - started:.0f} s)")
    print(f"load average at end: {os.getloadavg()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
