"""Thread start and join with thousands of readers alive: a stock `threading.Thread` against the
server's `_ReaderThread` (chat/runner.py), whose lock stays out of CPython 3.11's
`threading._shutdown_locks` (scanned whole at every non-daemon thread's start and join).

    python benchmarks/thread_start.py                      # 10,000 threads, 3 rounds
    python benchmarks/thread_start.py --threads 2000 --rounds 5 --json out.json

Each run is a fresh process: it starts --threads threads one after another, each blocked on a
lock once started (as an idle reader sleeps), then releases them and joins them all. Reported,
per kind: process CPU per start (the new thread's own start-up included) over the whole run and
over the last fifth (when the most threads are alive), wall time per start, and the time to
join them all. The two kinds alternate (which goes first alternates too); the summary gives
medians and the ratio lean / stock per round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import _thread, json, sys, threading, time
sys.path.insert(0, sys.argv[3])
from chat.runner import ThreadPerConnection, _ReaderThread, _shared_excepthook

kind, n = sys.argv[1], int(sys.argv[2])
block = _thread.allocate_lock()
block.acquire()

def serve():
    block.acquire()
    block.release()

hook = _shared_excepthook()
threads = []
fifth = max(1, n // 5)
cpu0, wall0 = time.process_time(), time.perf_counter()
for i in range(n):
    if i == n - fifth:
        cpu_last, wall_last = time.process_time(), time.perf_counter()
    if kind == "stock":
        thread = threading.Thread(target=serve, name=f"reader {i}")
    else:
        thread = _ReaderThread(serve, f"reader {i}", hook)
    thread.start()
    threads.append(thread)
cpu1, wall1 = time.process_time(), time.perf_counter()
block.release()
for thread in reversed(threads):
    thread.join()
wall2 = time.perf_counter()
print(json.dumps({
    "kind": kind,
    "threads": n,
    "cpu_us_per_start": (cpu1 - cpu0) / n * 1e6,
    "cpu_us_per_start_last_fifth": (cpu1 - cpu_last) / fifth * 1e6,
    "wall_us_per_start": (wall1 - wall0) / n * 1e6,
    "join_all_s": wall2 - wall1,
}))
"""


def one_run(kind: str, threads: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(threads), str(ROOT)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        kinds = ("stock", "lean") if round_ % 2 == 0 else ("lean", "stock")
        for kind in kinds:
            row = one_run(kind, args.threads)
            row["round"] = round_ + 1
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    fields = ("cpu_us_per_start", "cpu_us_per_start_last_fifth", "wall_us_per_start", "join_all_s")
    print(f"{args.threads} threads, {args.rounds} rounds, medians (lean / stock per round)")
    print("| figure | stock | lean | lean / stock per round |")
    print("|---|---|---|---|")
    for field in fields:
        stock = [r[field] for r in rows if r["kind"] == "stock"]
        lean = [r[field] for r in rows if r["kind"] == "lean"]
        ratios = ", ".join(f"{b / a:.2f}" for a, b in zip(stock, lean, strict=True))
        print(
            f"| {field} | {statistics.median(stock):.3g} | {statistics.median(lean):.3g} "
            f"| {ratios} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
