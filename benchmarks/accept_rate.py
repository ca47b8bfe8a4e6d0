"""Accept rate: how fast a server accepts and registers N clients, and what each one costs.

Opens N connections from this one process (non-blocking sockets, at most --window of them
registering at once), registers each (text: the greeting, then a nickname, until "* Hello";
IRC: NICK/USER until 001), keeps them all open, and reports connections per second (first
connect to last registration) and the server's RSS growth per connection (KiB).

    python benchmarks/accept_rate.py --n 10000            # threadroom, text then IRC
    python benchmarks/accept_rate.py --n 3000 --irc-only --external 6667:PID   # e.g. ngIRCd

The server under test is started as `python -m chat` (one fresh process per mode) unless
--external names a running IRC server. With --ngircd, ngIRCd (Debian: `apt-get install ngircd`)
is started too, on a free loopback port with a minimal configuration (no PAM, DNS or ident
lookups, no connection limits), and the two take turns for --rounds rounds (which goes first
alternates), each server fresh for each run; the summary gives medians and the ratio per round.

    python benchmarks/accept_rate.py --n 10000 --ngircd --rounds 3 --json out.json
"""

from __future__ import annotations

import argparse
import atexit
import errno
import json
import os
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# chat-server keeps history in the user's state directory by default: a benchmark's servers keep
# theirs (history stays on, as for a user) in a scratch directory, removed at exit.
_STATE = tempfile.mkdtemp(prefix="threadroom-bench-")
atexit.register(shutil.rmtree, _STATE, True)
os.environ["XDG_STATE_HOME"] = _STATE

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 300.0  # one mode never runs longer than this
SETTLE_S = 1.0


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+)", status)
    assert match is not None
    return int(match.group(1))


def threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"Threads:\s+(\d+)", status)
    assert match is not None
    return int(match.group(1))


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Client:
    __slots__ = ("buf", "done", "i", "sent", "sock")

    def __init__(self, i: int, sock: socket.socket) -> None:
        self.i = i
        self.sock = sock
        self.buf = b""
        self.sent = False
        self.done = False


def register_all(
    port: int, n: int, irc: bool, window: int, prompt_only: bool = False
) -> tuple[float, list[socket.socket]]:
    """Connects and registers n clients; returns the seconds it took and the open sockets."""
    selector = selectors.DefaultSelector()
    done: list[socket.socket] = []
    started = 0
    active = 0
    t0 = time.perf_counter()
    deadline = time.monotonic() + DEADLINE_S
    while len(done) < n:
        while started < n and active < window:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            err = sock.connect_ex(("127.0.0.1", port))
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, os.strerror(err))
            client = Client(started, sock)
            if irc:  # IRC clients speak first; the bytes wait in the socket until accepted
                client.sent = True
                selector.register(sock, selectors.EVENT_WRITE, client)
            else:
                selector.register(sock, selectors.EVENT_READ, client)
            started += 1
            active += 1
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(done)} of {n} registered in {DEADLINE_S} s")
        for key, mask in selector.select(5.0):
            client = key.data
            sock = client.sock
            if mask & selectors.EVENT_WRITE:
                sock.send(f"NICK u{client.i}\r\nUSER u 0 * :u\r\n".encode())
                selector.modify(sock, selectors.EVENT_READ, client)
                continue
            data = sock.recv(65536)
            if not data:
                raise ConnectionError(f"client {client.i} was disconnected: {client.buf!r}")
            client.buf += data
            if irc:
                if b" 001 " in client.buf:
                    finished = True
                else:
                    finished = False
                    for line in client.buf.split(b"\r\n"):
                        if line.startswith(b"PING "):
                            sock.send(b"PONG " + line[5:] + b"\r\n")
                            client.buf = client.buf.replace(line, b"")
            elif not client.sent:
                finished = prompt_only and b"Choose a nickname" in client.buf
                if not finished and b"Choose a nickname" in client.buf:
                    sock.send(f"u{client.i}\n".encode())
                    client.sent = True
                    client.buf = b""
            else:
                finished = b"* Hello" in client.buf
            if finished:
                selector.unregister(sock)
                done.append(sock)
                active -= 1
    elapsed = time.perf_counter() - t0
    selector.close()
    return elapsed, done


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(extra: list[str]) -> tuple[subprocess.Popen[bytes], int, int]:
    """Starts `python -m chat` on two free ports (so that --log-level WARNING works too)."""
    text_port, irc_port = free_port(), free_port()
    command = [sys.executable, "-m", "chat", "--port", str(text_port), "--irc-port"]
    command += [str(irc_port), "--max-clients", "12000", *extra]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", irc_port), timeout=1).close()
            return proc, text_port, irc_port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("server did not start") from None
            time.sleep(0.05)


NGIRCD_CONF = """[Global]
Name = ngircd.bench
Info = accept_rate benchmark
Listen = 127.0.0.1
Ports = {port}
MotdPhrase = hello
[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
PingTimeout = 600
PongTimeout = 600
[Options]
PAM = no
DNS = no
Ident = no
"""


def start_ngircd() -> tuple[subprocess.Popen[bytes], int]:
    """Starts ngIRCd in the foreground on a free loopback port (its config in the scratch
    directory); returns the process and the port."""
    exe = shutil.which("ngircd") or "/usr/sbin/ngircd"
    port = free_port()
    conf = Path(_STATE) / "ngircd.conf"
    conf.write_text(NGIRCD_CONF.format(port=port))
    proc = subprocess.Popen(
        [exe, "--nodaemon", "--config", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("ngircd did not start") from None
            time.sleep(0.05)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(
    pid: int, port: int, n: int, irc: bool, window: int, label: str, prompt_only: bool = False
) -> dict[str, float]:
    time.sleep(SETTLE_S)
    before, cpu0 = rss_kib(pid), cpu_s(pid)
    elapsed, socks = register_all(port, n, irc, window, prompt_only)
    cpu = cpu_s(pid) - cpu0
    time.sleep(SETTLE_S)
    after = rss_kib(pid)
    result = {
        "n": n,
        "seconds": elapsed,
        "per_s": n / elapsed,
        "server_cpu_s": cpu,
        "kib_per_conn": (after - before) / n,
        "threads": threads(pid),
    }
    mode = "irc" if irc else "prompt" if prompt_only else "text"
    print(
        f"{label:10} {mode:6} n={n:6} {elapsed:6.2f} s "
        f"{n / elapsed:7.0f}/s  server CPU {cpu:5.2f} s  "
        f"{(after - before) / n:5.1f} KiB/conn  threads {result['threads']}",
        flush=True,
    )
    for sock in socks:
        sock.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument(
        "--window",
        type=int,
        default=8,
        help="registrations at once (ngIRCd listens with a backlog of 10)",
    )
    parser.add_argument("--irc-only", action="store_true")
    parser.add_argument("--text-only", action="store_true")
    parser.add_argument(
        "--prompt-only",
        action="store_true",
        help="text clients stop at the nickname prompt (no join, so no fan-out to the lobby)",
    )
    parser.add_argument("--external", help="PORT:PID of a running IRC server (IRC only)")
    parser.add_argument("--server-arg", action="append", default=[], help="extra chat-server arg")
    parser.add_argument(
        "--ngircd", action="store_true", help="take turns with ngIRCd (IRC), --rounds times"
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args()
    if args.ngircd:
        return compare_with_ngircd(args)
    if args.external:
        port, pid = (int(x) for x in args.external.split(":"))
        measure(pid, port, args.n, True, args.window, "external")
        return 0
    modes = [m for m in (False, True) if not (m and args.text_only) and (m or not args.irc_only)]
    for irc in modes:
        proc, text_port, irc_port = start_server(args.server_arg)
        try:
            port = irc_port if irc else text_port
            measure(proc.pid, port, args.n, irc, args.window, "threadroom", args.prompt_only)
        finally:
            stop_server(proc)
    return 0


def compare_with_ngircd(args: argparse.Namespace) -> int:
    """Rounds of: threadroom IRC and ngIRCd (which goes first alternates), then threadroom's
    text clients at the nickname prompt (ngIRCd has no text mode); medians and ratios."""
    runs: list[dict[str, object]] = []
    for round_ in range(args.rounds):
        order = ["threadroom", "ngircd"] if round_ % 2 == 0 else ["ngircd", "threadroom"]
        for who in [*order, "prompt"]:
            load = os.getloadavg()[0]
            if who == "ngircd":
                proc, port = start_ngircd()
            else:
                proc, text_port, irc_port = start_server(args.server_arg)
                port = irc_port if who == "threadroom" else text_port
            try:
                result = measure(
                    proc.pid, port, args.n, who != "prompt", args.window, who, who == "prompt"
                )
            finally:
                stop_server(proc)
            runs.append({"round": round_, "server": who, "load": load, **result})
    print(f"{args.n} clients, {args.rounds} round(s), medians (load average at each start:", end="")
    print(f" {min(float(r['load']) for r in runs):.1f}-{max(float(r['load']) for r in runs):.1f})")
    for who in ("threadroom", "ngircd", "prompt"):
        mine = [r for r in runs if r["server"] == who]
        rate = statistics.median(float(r["per_s"]) for r in mine)
        cpu = statistics.median(float(r["server_cpu_s"]) / args.n * 1000 for r in mine)
        print(f"  {who:10} {rate:7.0f}/s  server CPU {cpu:.2f} ms per connection")
    for text in (False, True):
        ratios = [
            float(mine["per_s"]) / float(theirs["per_s"])
            for mine in runs
            for theirs in runs
            if mine["round"] == theirs["round"]
            and mine["server"] == ("prompt" if text else "threadroom")
            and theirs["server"] == "ngircd"
        ]
        what = "text at the prompt" if text else "IRC"
        shown = ", ".join(f"{r:.2f}" for r in ratios)
        print(f"  {what} / ngIRCd per round: {shown}; median {statistics.median(ratios):.2f}x")
    if args.json is not None:
        args.json.write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
