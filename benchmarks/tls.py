"""TLS against plaintext, in one run (#13): fan-out, handshakes, memory per idle connection.

    python benchmarks/tls.py              # 3 rounds of each; writes benchmarks/results/tls.json
    python benchmarks/tls.py --quick      # a smoke run of a few seconds (nothing written)

Each measurement starts a fresh `chat-server` with a plaintext and a TLS port (a self-signed
certificate made with the `openssl req` line of docs/tls.md) and drives it with chat-load, plain
and `--tls` alternately, so both see the same machine at the same time:

* fan-out N x M: deliveries/s, lost/duplicated/reordered, server CPU per delivery;
* handshakes: N clients connect, register and quit (`--messages 0`); server CPU per client;
* idle: N connections greeted (TLS: after the handshake) and left open; server RSS per one.

Linux only (it reads /proc). Every run is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import PY, ROOT, RunningServer, Server

RUN_TIMEOUT_S = 120
START_TIMEOUT_S = 10


def make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-days", "30", "-subj", "/CN=localhost", "-keyout", str(key)),
            *("-out", str(cert), "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def start_server(cert: Path, key: Path) -> RunningServer:
    """chat-server with --port and --tls-port (benchmarks/run.py's wrapper)."""
    command = [PY, "-m", "chat", "--port", "0", "--tls-port", "0"]
    command += ["--tls-cert", str(cert), "--tls-key", str(key), "--register-timeout", "0"]
    command += ["--flood-rate", "0", "--max-clients", "12000", "--max-per-address", "12000"]
    command += ["--sendq-bytes", str(64 * 1024 * 1024)]
    return RunningServer(
        Server("chat-server", command, speaks_tls=True, start_timeout_s=START_TIMEOUT_S)
    )


def load(
    server: RunningServer, tls: bool, cert: Path, clients: int, messages: int
) -> dict[str, Any]:
    command = [PY, "-m", "loadtool", "--protocol", "text", "--clients", str(clients)]
    command += ["--messages", str(messages), "--rate", "0", "--duration", str(RUN_TIMEOUT_S - 10)]
    command += ["--join-timeout", "60", "--json"]
    command += (
        ["--port", str(server.tls_port), "--tls-ca", str(cert)]
        if tls
        else [
            "--port",
            str(server.port),
        ]
    )
    before = server.cpu_s()
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=ROOT)
    wall = time.monotonic() - started
    report: dict[str, Any] = json.loads(done.stdout)
    report["server_cpu_s"] = server.cpu_s() - before
    report["wall_s"] = wall
    return report


def idle(server: RunningServer, tls: bool, cert: Path, count: int) -> dict[str, float]:
    """Server RSS per greeted idle connection, in KiB; then how long SIGTERM takes to stop the
    server with all of them connected (every goodbye, over TLS every close_notify)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 1000), hard))
    context = ssl.create_default_context(cafile=str(cert))
    base = server.rss_kib()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(
                ("127.0.0.1", server.tls_port if tls else server.port), timeout=10
            )
            if tls:
                sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
            socks.append(sock)
        greeted = sum(1 for sock in socks if sock.recv(4096).startswith(b"* Welcome"))
        assert greeted == count, f"{greeted} of {count} greeted"
        time.sleep(0.5)  # the last threads settle before RSS is read
        kib = (server.rss_kib() - base) / count
        started = time.monotonic()
        server.stop()
        return {"kib": kib, "shutdown_s": time.monotonic() - started}
    finally:
        for sock in socks:
            sock.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds' smoke run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--handshakes", type=int, default=1000, help="clients connecting")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections")
    args = parser.parse_args()
    fan = (20, 20) if args.quick else (100, 100)
    rounds = 1 if args.quick else args.rounds
    handshakes = 100 if args.quick else args.handshakes
    idle_count = 100 if args.quick else args.idle
    rows: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as directory:
        cert, key = make_certificate(Path(directory))
        for round_ in range(rounds):
            # Alternate which goes first, so neither always meets a warmer machine.
            for tls in (False, True) if round_ % 2 == 0 else (True, False):
                mode = "tls" if tls else "plain"
                for name, run in (
                    (f"fan-out {fan[0]}x{fan[1]}", lambda s, t=tls: load(s, t, cert, *fan)),
                    (f"handshakes {handshakes}", lambda s, t=tls: load(s, t, cert, handshakes, 0)),
                    (f"idle {idle_count}", lambda s, t=tls: idle(s, t, cert, idle_count)),
                ):
                    server = start_server(cert, key)
                    try:
                        rows.setdefault(f"{name} {mode}", []).append(run(server))
                    finally:
                        server.stop()
                print(f"round {round_ + 1} {mode} done", file=sys.stderr)
    summary = summarize(rows, fan, handshakes, idle_count)
    print(json.dumps(summary, indent=2))
    if not args.quick:
        out = ROOT / "benchmarks" / "results" / "tls.json"
        out.write_text(json.dumps({"summary": summary, "runs": rows}, indent=2) + "\n")
        print(f"json: {out}", file=sys.stderr)
    return 0 if summary["fan_out"]["tls"]["exactly_once"] else 1


def summarize(
    rows: dict[str, list[dict[str, Any]]], fan: tuple[int, int], handshakes: int, idle_count: int
) -> dict[str, Any]:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    summary: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
    }
    fan_out: dict[str, Any] = {}
    connect: dict[str, Any] = {}
    memory: dict[str, Any] = {}
    for mode in ("plain", "tls"):
        runs = rows[f"fan-out {fan[0]}x{fan[1]} {mode}"]
        fan_out[mode] = {
            "deliveries_per_s": med([r["delivery_rate"] for r in runs]),
            "server_cpu_us_per_delivery": med(
                [r["server_cpu_s"] * 1e6 / max(1, r["deliveries_received"]) for r in runs]
            ),
            "exactly_once": all(
                r["lost"] == 0 and r["duplicated"] == 0 and r["out_of_order"] == 0 and r["ok"]
                for r in runs
            ),
        }
        runs = rows[f"handshakes {handshakes} {mode}"]
        connect[mode] = {
            "clients_per_s": med([handshakes / r["wall_s"] for r in runs]),
            "server_cpu_ms_per_client": med([r["server_cpu_s"] * 1e3 / handshakes for r in runs]),
            "joined": min(r["joined"] for r in runs),
        }
        runs = rows[f"idle {idle_count} {mode}"]
        memory[mode] = {
            "kib_per_idle_connection": med([r["kib"] for r in runs]),
            "sigterm_to_exit_s": med([r["shutdown_s"] for r in runs]),
        }
    fan_out["tls_over_plain"] = (
        fan_out["tls"]["deliveries_per_s"] / fan_out["plain"]["deliveries_per_s"]
    )
    summary["fan_out"] = fan_out
    summary["connect_register_quit"] = connect
    summary["idle"] = memory
    return summary


if __name__ == "__main__":
    sys.exit(main())
