"""Large rooms and shutdown: thousands of real text clients in one room, on one server process.

    python benchmarks/big_room.py --joins 5000            # N users join one room and leave again,
                                                          # with --quiet-room-size 200 and 0
    python benchmarks/big_room.py --shutdown 10000        # SIGTERM with N registered clients
    python benchmarks/big_room.py --shutdown 10000 --hangup   # ... all hanging up at the signal

Measured: wall time of each phase, server CPU seconds (from /proc), and for a shutdown the time
from SIGTERM to the process's exit and whether every client read the goodbye before its EOF.
The clients are non-blocking sockets in this one process, read by one selector loop, so the
generator costs little next to the server. Linux only (/proc); bounded in count and time.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crowd import Crowd
from run import PY, RunningServer, Server

PHASE_TIMEOUT_S = 300


def server_command(quiet: int, clients: int) -> list[str]:
    return [
        PY,
        "-m",
        "chat",
        "--port",
        "0",
        "--register-timeout",
        "0",
        "--flood-rate",
        "0",
        "--max-clients",
        str(clients + 100),
        "--quiet-room-size",
        str(quiet),
        "--log-level",
        "INFO",
    ]


def online(port: int) -> int:
    """How many users the server has, asked by a fresh text client (it counts itself)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"counter0x\n/users\n")
        data = b""
        while b"*** Online (" not in data or not data.endswith(b"\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
        line = data[data.index(b"*** Online (") :]
        return int(line[len(b"*** Online (") : line.index(b")")]) - 1


def joins(count: int, quiet: int) -> dict[str, float]:
    server = RunningServer(Server(f"quiet {quiet}", server_command(quiet, count)))
    crowd = Crowd(("127.0.0.1", server.port))
    try:
        cpu0, t0 = server.cpu_s(), time.monotonic()
        crowd.join(count)
        join_s, join_cpu = time.monotonic() - t0, server.cpu_s() - cpu0
        cpu0, t0 = server.cpu_s(), time.monotonic()
        crowd.hang_up()
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while online(server.port) > 0:  # polls: the leaving has no event of its own to wait on
            if time.monotonic() > deadline:
                raise TimeoutError("leaving took too long")
            time.sleep(0.2)
        leave_s, leave_cpu = time.monotonic() - t0, server.cpu_s() - cpu0
    finally:
        crowd.close()
        server.stop()
    return {"join_s": join_s, "join_cpu": join_cpu, "leave_s": leave_s, "leave_cpu": leave_cpu}


def shutdown(count: int, hangup: bool, keep_log: str = "") -> dict[str, float]:
    server = RunningServer(Server("shutdown", server_command(200, count)))
    crowd = Crowd(("127.0.0.1", server.port))
    try:
        crowd.join(count)
        cpu0 = server.cpu_s()
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)  # servers before this one
        t0 = time.monotonic()
        if hangup:
            crowd.hang_up()
        os.kill(server.pid, signal.SIGTERM)
        if not hangup:
            crowd.pump(lambda: len(crowd.eof) == count, time.monotonic() + PHASE_TIMEOUT_S)
        goodbye_s = time.monotonic() - t0
        server.proc.wait(PHASE_TIMEOUT_S)
        exit_s = time.monotonic() - t0
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # this server too, now reaped
        total = usage.ru_utime + usage.ru_stime - reaped.ru_utime - reaped.ru_stime
        shutdown_cpu = total - cpu0
        if keep_log:
            Path(keep_log).write_text(Path(server.log.name).read_text())
        return {
            "all_eof_s": goodbye_s,
            "exit_s": exit_s,
            "cpu_before_signal": cpu0,
            "shutdown_cpu": shutdown_cpu,
            "goodbyes": len(crowd.goodbye_before_eof),
            "clients": count,
        }
    finally:
        crowd.close()
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--joins", type=int, default=0, help="users joining one room")
    parser.add_argument("--shutdown", type=int, default=0, help="clients online at SIGTERM")
    parser.add_argument("--hangup", action="store_true", help="they all hang up at the signal")
    parser.add_argument("--log", default="", help="keep the server's log in this file")
    parser.add_argument("--quiet", type=int, nargs="*", default=[200, 0])
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}", file=sys.stderr)
    if args.joins:
        results = {}
        for quiet in args.quiet:
            results[quiet] = result = joins(args.joins, quiet)
            print(
                f"{args.joins} join one room, --quiet-room-size {quiet}: "
                f"join {result['join_s']:.2f} s (server CPU {result['join_cpu']:.2f} s), "
                f"leave {result['leave_s']:.2f} s (server CPU {result['leave_cpu']:.2f} s)",
                flush=True,
            )
        if 0 in results and len(results) > 1:
            loud = results[0]
            for quiet, result in results.items():
                if quiet:
                    print(
                        f"ratio 0 / {quiet}: join time {loud['join_s'] / result['join_s']:.1f}x, "
                        f"join CPU {loud['join_cpu'] / max(result['join_cpu'], 0.01):.1f}x, "
                        f"leave time {loud['leave_s'] / result['leave_s']:.1f}x, "
                        f"leave CPU {loud['leave_cpu'] / max(result['leave_cpu'], 0.01):.1f}x"
                    )
    if args.shutdown:
        result = shutdown(args.shutdown, args.hangup, args.log)
        how = "all hanging up at the signal" if args.hangup else "idle, registered"
        print(
            f"SIGTERM with {args.shutdown} clients ({how}): exit after {result['exit_s']:.2f} s"
            f" (server CPU {result['shutdown_cpu']:.2f} s)"
            + (
                ""
                if args.hangup
                else f", every client at EOF after {result['all_eof_s']:.2f} s, "
                f"goodbye read before EOF by {result['goodbyes']}/{result['clients']}"
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
