"""Burst: 2,000 connections arriving in one second while 100 users chat at 200 messages/s.

    python benchmarks/burst.py                      # 2 rounds: without, then with the burst
    python benchmarks/burst.py --burst 2000 --rounds 3

Each run starts a fresh threadroom (benchmarks/run.py's command line: --max-clients 12000),
runs run.py's latency scenario (chat-load: 100 text clients in #lobby, 200 msg/s, plus the
latency probe) for --messages per client, and in the "with burst" runs a separate process
opens --burst IRC connections, evenly spread over one second, 3 s into the load, and registers
each (NICK/USER until 001; IRC users join no channel, so the chatters' room stays the same
size and only the arrival itself is measured). The burst clients stay connected until the load
ends. Reported: the chatters' p50/p99/max (chat-load) and the probe's, the burst's registered
and refused counts and how long registering them all took. The target (#14): p99 with the burst
at most 2x p99 without, and nobody refused below --max-clients.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import PY, Result, RunningServer, Scenario, run_load, servers

BURST_DELAY_S = 3.0
BURST_TIMEOUT_S = 60.0


def burst_client(port: int, count: int, spread_s: float, hold_s: float) -> dict[str, Any]:
    """Opens `count` IRC connections spread evenly over `spread_s`, registers each, holds them
    for `hold_s` after the first connect, and reports."""
    selector = selectors.DefaultSelector()
    buffers: dict[int, bytes] = {}
    registered: set[int] = set()
    refused: set[int] = set()
    socks: list[socket.socket] = []
    start = time.monotonic()
    last_registered = start
    opened = 0
    deadline = start + BURST_TIMEOUT_S
    while time.monotonic() < deadline:
        due = min(count, int((time.monotonic() - start) / spread_s * count) + 1)
        while opened < due:
            sock = socket.socket()
            sock.setblocking(False)
            try:
                sock.connect_ex(("127.0.0.1", port))
            except OSError:
                refused.add(opened)
            socks.append(sock)
            buffers[opened] = b""
            selector.register(sock, selectors.EVENT_WRITE, opened)
            opened += 1
        if len(registered) + len(refused) >= count:
            break
        for key, events in selector.select(0.005):
            index, sock = key.data, key.fileobj
            assert isinstance(sock, socket.socket)
            if events & selectors.EVENT_WRITE:
                try:
                    sock.send(f"NICK b{index}\r\nUSER b 0 * :b\r\n".encode())
                except OSError:
                    refused.add(index)
                    selector.unregister(sock)
                    continue
                selector.modify(sock, selectors.EVENT_READ, index)
                continue
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data or b"ERROR" in data:
                refused.add(index)
                selector.unregister(sock)
                continue
            buffers[index] = buffers[index][-512:] + data
            if b" 001 " in buffers[index]:
                registered.add(index)
                last_registered = time.monotonic()
                selector.unregister(sock)
    register_s = last_registered - start
    time.sleep(max(0.0, start + hold_s - time.monotonic()))
    for sock in socks:
        sock.close()
    return {
        "registered": len(registered),
        "refused": len(refused),
        "register_s": register_s,
        "count": count,
    }


def one_run(with_burst: bool, burst: int, messages: int) -> dict[str, Any]:
    server = next(s for s in servers() if s.name == "threadroom")
    running = RunningServer(server)
    scenario = Scenario("latency 100 clients, 200 msg/s", 100, messages, rate=200)
    result = Result(server.name, scenario.name)
    burst_proc = None
    try:
        if with_burst:
            hold_s = BURST_DELAY_S + messages * 100 / 200
            burst_proc = subprocess.Popen(
                [PY, __file__, "--client", str(running.irc_port), str(burst), str(hold_s)],
                stdout=subprocess.PIPE,
                text=True,
            )
        cpu = running.cpu_s()
        run_load(running, scenario, result)
        cpu = running.cpu_s() - cpu
        report = {}
        if burst_proc is not None:
            out, _ = burst_proc.communicate(timeout=BURST_TIMEOUT_S + 60)
            report = json.loads(out)
    finally:
        if burst_proc is not None and burst_proc.poll() is None:
            burst_proc.kill()
            burst_proc.wait()
        running.stop()
    return {
        "burst": with_burst,
        "ok": result.ok,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "max_ms": result.max_ms,
        "probe_p50_ms": result.probe_p50_ms,
        "probe_p99_ms": result.probe_p99_ms,
        "lost": result.lost,
        "server_cpu_s": cpu,
        **report,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=20, help="per chatter (200 msg/s)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--client", nargs=3, help=argparse.SUPPRESS)  # PORT COUNT HOLD_S
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.client:
        port, count, hold_s = int(args.client[0]), int(args.client[1]), float(args.client[2])
        time.sleep(BURST_DELAY_S)
        print(json.dumps(burst_client(port, count, 1.0, hold_s - BURST_DELAY_S)))
        return 0
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}", file=sys.stderr)
    rows = []
    for _round in range(args.rounds):
        for with_burst in (False, True):
            row = one_run(with_burst, args.burst, args.messages)
            rows.append(row)
            print(row, file=sys.stderr, flush=True)

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    print(
        "| run | chatters p50 / p99 / max ms | probe p50 / p99 ms | burst registered "
        "| refused | burst registered in s | server CPU s |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        burst = (
            (str(row["registered"]), str(row["refused"]), f"{row['register_s']:.2f}")
            if row["burst"]
            else ("-", "-", "-")
        )
        print(
            f"| {'with' if row['burst'] else 'without'} burst | {cell(row['p50_ms'])} / "
            f"{cell(row['p99_ms'])} / {cell(row['max_ms'])} | {cell(row['probe_p50_ms'])} / "
            f"{cell(row['probe_p99_ms'])} | {burst[0]} | {burst[1]} | {burst[2]} | "
            f"{row['server_cpu_s']:.2f} |"
        )
    quiet = [r["p99_ms"] for r in rows if not r["burst"] and r["p99_ms"]]
    loud = [r["p99_ms"] for r in rows if r["burst"] and r["p99_ms"]]
    if quiet and loud:
        print(
            f"\nchatters' p99 with / without the burst (means): "
            f"{sum(loud) / len(loud) / (sum(quiet) / len(quiet)):.2f}x (target: at most 2x)"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
