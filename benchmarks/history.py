"""History (#11): what keeping history costs, measured as ratios within one run.

    python benchmarks/history.py                 # all three, writes benchmarks/results/history.json
    python benchmarks/history.py --only fanout   # fanout | replay | store
    python benchmarks/history.py --quick         # a smoke run: smaller numbers, nothing written

* fanout: chat-load, 100 clients x 100 messages flat out, against chat-server with
  `--history-db FILE` and with `--no-history` (alternating, best of N each): the ratio of
  deliveries/s, and afterwards every delivered message is in the file (count, and each
  sender's messages in order of id).
* replay: a 100-member room with 200 msg/s of background traffic (chat-load); newcomers join
  one after another and get the 50-message replay: time from the hello sent to the replay's
  last line received, p50/p99.
* store: a file of 1,000,000 messages (10 rooms); `/history 50` (text) and
  `CHATHISTORY BEFORE #room msgid=N 50` (IRC, N random) answered in p50/p99 ms; bytes per
  message on disk.

Linux; every loop bounded in count and time; each server is its own process on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import PY, ROOT, RunningServer, Server

RESULTS = ROOT / "benchmarks" / "results" / "history.json"
START_TIMEOUT_S = 60
RUN_TIMEOUT_S = 180


def start_server(*args: str) -> RunningServer:
    """chat-server in a process of its own (benchmarks/run.py's wrapper), IRC port included."""
    command = [PY, "-m", "chat", "--port", "0", "--irc-port", "0", "--flood-rate", "0"]
    command += ["--register-timeout", "0", "--max-clients", "400", "--log-level", "INFO"]
    # As benchmarks/run.py: a flat-out run must measure the server, not drop chat-load's
    # bots for reading slower than 100 senders write.
    command += ["--sendq-bytes", str(64 * 1024 * 1024), *args]
    return RunningServer(
        Server("chat-server", command, speaks_irc=True, start_timeout_s=START_TIMEOUT_S)
    )


def chat_load(
    port: int, clients: int, messages: int, rate: float, duration: float
) -> dict[str, Any]:
    command = [PY, "-m", "loadtool", "--port", str(port), "--protocol", "text"]
    command += ["--clients", str(clients), "--messages", str(messages), "--rate", str(rate)]
    command += ["--duration", str(duration), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=ROOT)
    try:
        return json.loads(done.stdout)  # type: ignore[no-any-return]
    except ValueError:
        raise RuntimeError(f"chat-load failed: {done.stderr[-500:]}") from None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- fan-out ------------------------------------------------------------------------------------


def fanout(rounds: int, clients: int, messages: int) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"history": [], "no-history": []}
    cpu: dict[str, list[float]] = {"history": [], "no-history": []}
    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for mode in ("no-history", "history"):
                path = os.path.join(tmp, f"fanout-{r}.sqlite3")
                args = ["--history-db", path] if mode == "history" else ["--no-history"]
                server = start_server(*args)
                try:
                    before = server.cpu_s()
                    report = chat_load(server.port, clients, messages, 0, RUN_TIMEOUT_S - 20)
                    if mode == "history":  # until the writer has it all: its cost is counted
                        wait_stored(path, clients * messages)
                    cpu[mode].append(server.cpu_s() - before)
                finally:
                    server.stop()
                if not report.get("ok"):
                    raise RuntimeError(f"chat-load reported problems: {report}")
                rates[mode].append(report["delivery_rate"])
                if mode == "history":
                    checks.append(check_store(path, clients, messages, report))
    best = {mode: max(values) for mode, values in rates.items()}

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    return {
        "server_cpu_s": cpu,
        "cpu_ratio_median": median(cpu["history"]) / median(cpu["no-history"]),
        "clients": clients,
        "messages": messages,
        "deliveries_per_s": rates,
        "ratio_best": best["history"] / best["no-history"],
        "ratio_median": sorted(rates["history"])[len(rates["history"]) // 2]
        / sorted(rates["no-history"])[len(rates["no-history"]) // 2],
        "store_checks": checks,
    }


def wait_stored(path: str, count: int) -> None:
    """Polls the file until it holds `count` messages (at most 30 s): the writer's work is part
    of the cost measured."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with sqlite3.connect(path) as db:
            if db.execute("SELECT count(*) FROM events").fetchone()[0] >= count:
                return
        time.sleep(0.02)


def check_store(path: str, clients: int, messages: int, report: dict[str, Any]) -> dict[str, Any]:
    """Every delivered load message is in the file, and each sender's are in order."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT sender, text FROM events ORDER BY id").fetchall()
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    last: dict[str, int] = {}
    in_order = True
    count = 0
    for sender, text in rows:
        match = re.match(r"load \S+ #(\d+)", text)
        if match is None:
            continue
        count += 1
        seq = int(match[1])
        if seq <= last.get(sender, -1):
            in_order = False
        last[sender] = seq
    return {
        "stored": count,
        "expected": clients * messages,
        "lost_by_chat_load": report.get("lost", 0),
        "in_order": in_order,
        "integrity": integrity,
    }


# -- join replay --------------------------------------------------------------------------------


def _join_replay_ms(port: int, nick: str) -> float:
    """Connect, send a nickname, and time until the replay's closing divider arrives."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        buffer = b""
        while buffer.count(b"\n") < 2:  # the greeting
            buffer += sock.recv(65536)
        start = time.perf_counter()
        sock.sendall(f"{nick}\n".encode())
        buffer = b""
        while b"--- end of history ---\n" not in buffer:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError(f"closed before the replay: {buffer[-200:]!r}")
            buffer += chunk
        elapsed = (time.perf_counter() - start) * 1000
        sock.sendall(b"/quit\n")
        return elapsed
    finally:
        sock.close()


def replay(joins: int, members: int, rate: float, seconds: float) -> dict[str, Any]:
    import threading

    with tempfile.TemporaryDirectory() as tmp:
        server = start_server("--history-db", os.path.join(tmp, "replay.sqlite3"))
        try:
            seed = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            seed.sendall(b"seed\n" + b"".join(b"seed line %d\n" % i for i in range(50)))
            seed.sendall(b"/users\n")
            buffer = b""
            while b"*** Online" not in buffer:
                buffer += seed.recv(65536)
            load: dict[str, Any] = {}
            background = threading.Thread(
                target=lambda: load.update(
                    chat_load(
                        server.port, members, int(rate * seconds / members), rate, seconds + 30
                    )
                )
            )
            background.start()
            time.sleep(3)  # the members join and start talking (a warm-up, not a synchronisation)
            times = []
            for i in range(joins):
                if not background.is_alive():
                    break
                times.append(_join_replay_ms(server.port, f"newcomer{i}"))
            background.join(RUN_TIMEOUT_S)
            seed.close()
        finally:
            server.stop()
    return {
        "members": members,
        "background_msgs_per_s": rate,
        "joins": len(times),
        "p50_ms": percentile(times, 0.5),
        "p99_ms": percentile(times, 0.99),
        "max_ms": max(times),
        "background_deliveries_per_s": load.get("delivery_rate"),
    }


# -- a big store --------------------------------------------------------------------------------


def build_store(path: str, total: int, rooms: int) -> None:
    """`total` messages in `rooms` rooms, written the way the server writes them (its schema)."""
    sys.path.insert(0, str(ROOT))
    from chat import events as ev
    from chat.store import RoomRecord
    from chat.store.sqlite import SqliteStore, _row

    store = SqliteStore(path)
    store.start()
    for r in range(rooms):
        store.offer_room(RoomRecord(f"#room{r}", creator="builder", created_ts=1.0))
    store.stop(10.0)
    now = time.time() - total * 0.01
    with sqlite3.connect(path) as db:
        batch = []
        for i in range(1, total + 1):
            room = f"#room{i % rooms}"
            text = f"message number {i} with some ordinary words in it, like people type"
            batch.append(
                _row(
                    ev.Message(
                        i,
                        now + i * 0.01,
                        room,
                        sender=f"user{i % 97}",
                        text=text,
                        userhost="u@text",
                    )
                )
            )
            if len(batch) == 50_000:
                db.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?)", batch)
                batch.clear()
        db.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?)", batch)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _text_history_ms(sock: socket.socket, room: str) -> float:
    start = time.perf_counter()
    sock.sendall(f"/history {room} 50\n".encode())
    buffer = b""
    while b"--- end of history ---\n" not in buffer:
        buffer += sock.recv(1 << 20)
    return (time.perf_counter() - start) * 1000


def _irc_history_ms(sock: socket.socket, room: str, before: int) -> float:
    start = time.perf_counter()
    sock.sendall(f"CHATHISTORY BEFORE {room} msgid={before} 50\r\n".encode())
    buffer = b""
    while not re.search(rb"BATCH -\S+\r\n", buffer):
        buffer += sock.recv(1 << 20)
    return (time.perf_counter() - start) * 1000


def big_store(total: int, rooms: int, queries: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "big.sqlite3")
        started = time.perf_counter()
        build_store(path, total, rooms)
        build_s = time.perf_counter() - started
        size = os.path.getsize(path)
        started = time.perf_counter()
        server = start_server("--history-db", path, "--history-replay", "0")
        start_s = time.perf_counter() - started
        try:
            text = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            text.sendall(b"reader\n" + b"".join(f"/join #room{r}\n".encode() for r in range(rooms)))
            text.sendall(b"/users\n")
            buffer = b""
            while b"*** Online" not in buffer:
                buffer += text.recv(65536)
            irc = socket.create_connection(("127.0.0.1", server.irc_port), timeout=10)
            irc.sendall(b"CAP REQ :batch server-time message-tags draft/chathistory\r\nCAP END\r\n")
            irc.sendall(b"NICK ircreader\r\nUSER r 0 * :r\r\n")
            irc.sendall(
                (
                    "JOIN " + ",".join(f"#room{r}" for r in range(rooms)) + "\r\nPING done\r\n"
                ).encode()
            )
            buffer = b""
            while b"PONG" not in buffer:
                buffer += irc.recv(1 << 20)
            rng = random.Random(11)
            text_ms = [
                _text_history_ms(text, f"#room{rng.randrange(rooms)}") for _ in range(queries)
            ]
            irc_ms = [
                _irc_history_ms(irc, f"#room{rng.randrange(rooms)}", rng.randrange(100, total))
                for _ in range(queries)
            ]
            text.close()
            irc.close()
        finally:
            server.stop()
    return {
        "messages": total,
        "rooms": rooms,
        "build_s": build_s,
        "server_start_s": start_s,
        "file_bytes": size,
        "bytes_per_message": size / total,
        "text_history_p50_ms": percentile(text_ms, 0.5),
        "text_history_p99_ms": percentile(text_ms, 0.99),
        "chathistory_before_p50_ms": percentile(irc_ms, 0.5),
        "chathistory_before_p99_ms": percentile(irc_ms, 0.99),
        "queries": queries,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["fanout", "replay", "store"], action="append")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    only = set(args.only or ["fanout", "replay", "store"])
    results: dict[str, Any] = {}
    if "fanout" in only:
        results["fanout"] = fanout(
            1 if args.quick else 7, 20 if args.quick else 100, 20 if args.quick else 100
        )
        sys.stderr.write(f"fanout: {json.dumps(results['fanout'])}\n")
    if "replay" in only:
        results["replay"] = replay(
            20 if args.quick else 300, 20 if args.quick else 100, 200.0, 5 if args.quick else 30
        )
        sys.stderr.write(f"replay: {json.dumps(results['replay'])}\n")
    if "store" in only:
        results["store"] = big_store(
            20_000 if args.quick else 1_000_000, 10, 50 if args.quick else 500
        )
        sys.stderr.write(f"store: {json.dumps(results['store'])}\n")
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        RESULTS.write_text(json.dumps({**previous, **results}, indent=2) + "\n")
    sys.stdout.write(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
