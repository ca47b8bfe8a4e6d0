"""Benchmarks: start each server, drive it with chat-load; print a table, write JSON and a chart.

    python benchmarks/run.py            # the full set: writes benchmarks/results/ (committed)
    python benchmarks/run.py --quick    # a smoke run of a few seconds: benchmarks/results-quick/
    python benchmarks/run.py --chart-only benchmarks/results/results.json   # redraw the chart

Servers: this server (threadroom), its `--lock-while-sending` classroom mode (the tutorial design:
the broadcast sends to every peer under the lock), and benchmarks/asyncio_server.py (asyncio
streams, the way the asyncio docs show). Every server runs alone, on 127.0.0.1, restarted for
each scenario; the bots speak the text protocol, which all three understand.

Measured: deliveries/s and latency (chat-load's own report), server CPU seconds and peak RSS
(from /proc), chat-load's CPU seconds (so one can see whether the generator was the limit).
Linux only (it reads /proc). Every run is bounded in count and time.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# chat-server keeps history in the user's state directory by default: a benchmark's servers keep
# theirs (history stays on, as for a user) in a scratch directory, removed at exit. The scripts
# that import this module (big_room, burst, shutdown) get it too.
_STATE = tempfile.mkdtemp(prefix="threadroom-bench-")
atexit.register(shutil.rmtree, _STATE, True)
os.environ["XDG_STATE_HOME"] = _STATE

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
# The full run's results are committed; a smoke run must never overwrite them (it is ignored
# by git instead).
RESULTS_DIR = ROOT / "benchmarks" / "results"
QUICK_RESULTS_DIR = ROOT / "benchmarks" / "results-quick"
SERVER_START_TIMEOUT_S = 10
RUN_TIMEOUT_S = 120


@dataclass(frozen=True)
class Server:
    name: str
    command: list[str]
    speaks_irc: bool = False  # logs "IRC listening on HOST:PORT" too
    speaks_tls: bool = False  # logs "TLS listening on HOST:PORT" too
    start_timeout_s: float = SERVER_START_TIMEOUT_S
    external: tuple[int, int] | None = None  # (port, pid) of an IRC server already running


@dataclass(frozen=True)
class Scenario:
    name: str
    clients: int
    messages: int
    rate: float = 0.0  # 0: flat out
    slow_clients: int = 0
    idle: bool = False  # connections that join and sit: memory per connection
    protocol: str = "text"  # or "irc": only servers that speak IRC run it


@dataclass
class Result:
    server: str
    scenario: str
    ok: bool = False
    deliveries_per_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    disconnected: dict[str, int] = field(default_factory=dict)
    server_cpu_s: float = 0.0
    server_rss_mib: float = 0.0
    rss_per_conn_kib: float | None = None
    loadgen_cpu_s: float = 0.0
    probe_p50_ms: float | None = None  # a dedicated sender/receiver pair beside the load
    probe_p99_ms: float | None = None
    note: str = ""


def servers() -> list[Server]:
    chat = [
        PY,
        "-m",
        "chat",
        "--port",
        "0",
        "--irc-port",
        "0",
        "--register-timeout",
        "0",
        "--flood-rate",
        "0",
        "--max-clients",
        "12000",
        "--sendq-bytes",
        str(64 * 1024 * 1024),
        "--log-level",
        "INFO",
    ]
    return [
        Server("threadroom", chat, speaks_irc=True),
        Server("threadroom --lock-while-sending", [*chat, "--lock-while-sending"]),
        Server(
            "asyncio streams", [PY, str(ROOT / "benchmarks" / "asyncio_server.py"), "--port", "0"]
        ),
    ]


def scenarios(quick: bool, idle: int = 5000) -> list[Scenario]:
    if quick:
        return [
            Scenario("fan-out 20x20", 20, 20),
            Scenario("IRC fan-out 20x20", 20, 20, protocol="irc"),
            Scenario("latency 20 clients, 50 msg/s", 20, 5, rate=50),
            Scenario("idle 200", 200, 0, idle=True),
        ]
    return [
        Scenario("fan-out 100x100", 100, 100),
        Scenario("fan-out 500x10", 500, 10),
        Scenario("IRC fan-out 100x100", 100, 100, protocol="irc"),
        Scenario("latency 100 clients, 200 msg/s", 100, 10, rate=200),
        Scenario("same + 1 stalled reader", 100, 10, rate=200, slow_clients=1),
        Scenario(f"idle {idle}", idle, 0, idle=True),
    ]


class RunningServer:
    """A server process whose log goes to a file (a full pipe would stall its logging)."""

    def __init__(self, server: Server) -> None:
        self.external = server.external is not None
        if server.external is not None:  # someone else's server (ngIRCd, InspIRCd, ergo...)
            self.port = self.irc_port = server.external[0]
            self.pid = server.external[1]
            return
        self.log = tempfile.NamedTemporaryFile("w+", prefix="bench-", suffix=".log")  # noqa: SIM115
        self.proc = subprocess.Popen(
            server.command, stderr=self.log, stdout=subprocess.DEVNULL, cwd=ROOT
        )
        self.pid = self.proc.pid
        deadline = time.monotonic() + server.start_timeout_s
        while True:
            log = Path(self.log.name).read_text()
            match = re.search(r"^\S+ \S+ INFO listening on [^ ]*:(\d+)", log, re.MULTILINE)
            irc = re.search(r"IRC listening on [^ ]*:(\d+)", log)
            tls = re.search(r"INFO TLS listening on [^ ]*:(\d+)", log)
            if match and (irc or not server.speaks_irc) and (tls or not server.speaks_tls):
                self.port = int(match.group(1))
                self.irc_port = int(irc.group(1)) if irc else 0
                self.tls_port = int(tls.group(1)) if tls else 0
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{server.name} did not start: {Path(self.log.name).read_text()}"
                )
            time.sleep(0.05)

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]

    def peak_rss_kib(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.external:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_load(server: RunningServer, scenario: Scenario, result: Result) -> None:
    command = [
        PY,
        "-m",
        "loadtool",
        "--port",
        str(server.irc_port if scenario.protocol == "irc" else server.port),
        "--protocol",
        scenario.protocol,
        "--clients",
        str(scenario.clients),
        "--messages",
        str(scenario.messages),
        "--rate",
        str(scenario.rate),
        "--slow-clients",
        str(scenario.slow_clients),
        "--duration",
        str(RUN_TIMEOUT_S - 10),
        "--json",
    ]
    probe = LatencyProbe(server.port) if scenario.rate and scenario.protocol == "text" else None
    before = children_cpu_s()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=ROOT
        )
    finally:
        if probe is not None:
            result.probe_p50_ms, result.probe_p99_ms = probe.stop()
    result.loadgen_cpu_s = children_cpu_s() - before
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        result.note = (done.stderr or done.stdout).strip()[-200:]
        return
    result.ok = done.returncode == 0
    result.deliveries_per_s = report["delivery_rate"]
    if report.get("latency"):
        result.p50_ms = report["latency"]["p50_ms"]
        result.p99_ms = report["latency"]["p99_ms"]
        result.max_ms = report["latency"]["max_ms"]
    result.lost = report["lost"]
    result.duplicated = report["duplicated"]
    result.out_of_order = report["out_of_order"]
    result.disconnected = {
        **report["disconnected"],
        **{f"stalled: {k}": v for k, v in report["slow_clients_disconnected"].items()},
    }


class LatencyProbe:
    """Measures the server's latency apart from chat-load's: one sender, one receiver, each on
    its own blocking socket in this (otherwise idle) process, 50 messages a second while the
    load runs. chat-load reads 100 sockets in one thread, and its p99 is mostly its own."""

    def __init__(self, port: int) -> None:
        self._tx = self._join(port, "probetx")
        self._rx = self._join(port, "proberx")
        self._stop = threading.Event()
        self._sent: dict[int, int] = {}
        self._latencies: list[int] = []
        self._threads = [
            threading.Thread(target=self._send),
            threading.Thread(target=self._receive),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _join(port: int, nick: str) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(f"{nick}\n".encode())
        buffer = b""
        while b"* Hello " not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("probe could not join")
            buffer += chunk
        return sock

    def _send(self) -> None:
        n = 0
        while not self._stop.wait(0.02) and n < 10_000:
            self._sent[n] = time.perf_counter_ns()
            self._tx.sendall(f"probe {n}\n".encode())
            n += 1

    def _receive(self) -> None:
        buffer = b""
        self._rx.settimeout(0.2)
        while not self._stop.is_set():
            try:
                chunk = self._rx.recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                return
            now = time.perf_counter_ns()
            *lines, buffer = (buffer + chunk).split(b"\n")
            for line in lines:
                if line.startswith(b"<probetx> probe "):
                    sent = self._sent.get(int(line.rsplit(b" ", 1)[1]))
                    if sent is not None:
                        self._latencies.append(now - sent)

    def stop(self) -> tuple[float | None, float | None]:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self._tx.close()
        self._rx.close()
        if not self._latencies:
            return None, None
        ordered = sorted(self._latencies)

        def pick(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

        return pick(0.5), pick(0.99)


def run_idle(server: RunningServer, scenario: Scenario, result: Result) -> None:
    """Opens `clients` connections that sit at the nickname prompt; memory per connection.

    They do not pick a nickname on purpose: 5,000 people joining one room is 12.5 million join
    notices (each join is announced to everyone), which measures the room, not a connection.
    What is left is what an idle connection costs: its session, its threads, its buffers.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < scenario.clients + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, scenario.clients + 1000), hard))
    base = server.rss_kib()
    socks: list[socket.socket] = []
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        for _ in range(scenario.clients):
            if time.monotonic() > deadline:
                break
            socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        # every greeting arrives: each connection was accepted and is being served
        greeted = sum(1 for sock in socks if sock.recv(4096).startswith(b"* Welcome"))
        time.sleep(0.5)  # let the last threads settle before reading RSS
        result.ok = greeted == scenario.clients
        result.rss_per_conn_kib = (server.rss_kib() - base) / max(1, len(socks))
        result.note = f"{greeted} of {scenario.clients} connections accepted and greeted"
    except OSError as error:
        result.note = f"after {len(socks)} connections: {error}"
    finally:
        for sock in socks:
            sock.close()


def run(
    quick: bool,
    only: list[str] | None,
    scenario_names: list[str] | None,
    external: list[Server],
    idle: int = 5000,
) -> list[Result]:
    results = []
    for scenario in scenarios(quick, idle):
        if scenario_names and not any(n in scenario.name for n in scenario_names):
            continue
        for server in servers() + external:
            if only and not any(o in server.name for o in only):
                continue
            if scenario.protocol == "irc" and not server.speaks_irc:
                continue
            if server.external is not None and scenario.protocol != "irc":
                continue
            result = Result(server.name, scenario.name)
            try:
                running = RunningServer(server)
            except RuntimeError as error:
                result.note = str(error).splitlines()[-1][:200]
                results.append(result)
                continue
            try:
                cpu_before = running.cpu_s()
                (run_idle if scenario.idle else run_load)(running, scenario, result)
                result.server_cpu_s = running.cpu_s() - cpu_before
                result.server_rss_mib = running.peak_rss_kib() / 1024
            finally:
                running.stop()
            results.append(result)
            print(f"  {scenario.name:34} {server.name:32} {summary(result)}", file=sys.stderr)
    return results


def summary(r: Result) -> str:
    if r.rss_per_conn_kib is not None:
        return f"{r.rss_per_conn_kib:.1f} KiB/conn {r.note}"
    p99 = f"p99 {r.p99_ms:.1f} ms" if r.p99_ms is not None else ""
    return f"{r.deliveries_per_s:,.0f}/s {p99} {'OK' if r.ok else 'PROBLEMS ' + r.note}"


def table(results: list[Result]) -> str:
    head = (
        "| scenario | server | deliveries/s | p50 ms | p99 ms | max ms | lost/dup/reord | "
        "disconnected | server CPU s | server peak RSS MiB | KiB/conn | chat-load CPU s | "
        "probe p50/p99 ms |"
    )
    lines = [head, "|" + "---|" * 13]

    def ms(value: float | None) -> str:
        return f"{value:.2f}" if value is not None else ""

    for r in results:
        disconnected = ", ".join(f"{k}: {v}" for k, v in r.disconnected.items())
        lines.append(
            f"| {r.scenario} | {r.server} | {r.deliveries_per_s:,.0f} | {ms(r.p50_ms)} | "
            f"{ms(r.p99_ms)} | {ms(r.max_ms)} | {r.lost}/{r.duplicated}/{r.out_of_order} | "
            f"{disconnected} | {r.server_cpu_s:.2f} | {r.server_rss_mib:.1f} | "
            f"{'' if r.rss_per_conn_kib is None else f'{r.rss_per_conn_kib:.1f}'} | "
            f"{r.loadgen_cpu_s:.2f} | "
            f"{'' if r.probe_p99_ms is None else f'{ms(r.probe_p50_ms)} / {ms(r.probe_p99_ms)}'} |"
        )
    return "\n".join(lines)


def ratios(results: list[Result]) -> list[str]:
    by = {(r.scenario, r.server): r for r in results}
    lines = []
    for scenario in dict.fromkeys(r.scenario for r in results):
        ours = by.get((scenario, "threadroom"))
        if ours is None or not ours.deliveries_per_s:
            continue
        for other in ("threadroom --lock-while-sending", "asyncio streams"):
            theirs = by.get((scenario, other))
            if theirs is not None and theirs.deliveries_per_s:
                lines.append(
                    f"{scenario}: threadroom / {other} = "
                    f"{ours.deliveries_per_s / theirs.deliveries_per_s:.2f}x deliveries/s"
                )
            if theirs is not None and ours.p99_ms and theirs.p99_ms:
                lines.append(
                    f"{scenario}: p99 {other} / threadroom = {theirs.p99_ms / ours.p99_ms:.1f}x"
                )
    # The same server across scenarios: more clients, and one stalled reader among them.
    for server in dict.fromkeys(r.server for r in results):
        few, many = by.get(("fan-out 100x100", server)), by.get(("fan-out 500x10", server))
        if few is not None and many is not None and few.deliveries_per_s:
            lines.append(
                f"{server}: fan-out 500x10 / 100x100 = "
                f"{many.deliveries_per_s / few.deliveries_per_s:.2f}x deliveries/s"
            )
        calm = by.get(("latency 100 clients, 200 msg/s", server))
        stalled = by.get(("same + 1 stalled reader", server))
        if calm is not None and stalled is not None and calm.p99_ms and stalled.p99_ms:
            lines.append(
                f"{server}: p99 with 1 stalled reader / without = "
                f"{stalled.p99_ms / calm.p99_ms:.1f}x"
            )
    return lines


def chart(results: list[Result], path: Path) -> str:
    """Draws throughput and latency (and idle memory, if measured), each on its own log axis.

    Throughput spans 20,000 to millions of deliveries/s and latency 1 ms to seconds: on one
    linear axis the paced and stalled-reader runs would be invisible.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no chart: pip install matplotlib"
    load = [r for r in results if r.rss_per_conn_kib is None]
    idle = [r for r in results if r.rss_per_conn_kib is not None]
    if not load:
        return "no chart: only idle scenarios ran"
    panels = 3 if idle else 2
    heights = [1.0, 1.0, 0.6][:panels]
    fig, axes = plt.subplots(
        panels, 1, figsize=(12, 4.2 * sum(heights)), gridspec_kw={"height_ratios": heights}
    )
    servers = list(dict.fromkeys(r.server for r in results))
    colors = {s: f"C{i}" for i, s in enumerate(servers)}
    _bars(
        axes[0],
        load,
        servers,
        colors,
        lambda r: r.deliveries_per_s or None,
        _count_label,
        "deliveries/s (log)",
        "Throughput: deliveries per second (higher is better)",
    )
    _bars(
        axes[1],
        load,
        servers,
        colors,
        lambda r: r.p99_ms,
        _ms_label,
        "ms (log)",
        "Latency, chat-load's: p99 light, p50 solid (lower is better)",
        inner=lambda r: r.p50_ms,
    )
    if idle:
        _bars(
            axes[2],
            idle,
            servers,
            colors,
            lambda r: r.rss_per_conn_kib,
            lambda v: f"{v:.1f}",
            "KiB per connection",
            "Memory per idle connection (lower is better)",
            log=False,
        )
    axes[0].legend(loc="upper right", fontsize=8)
    fig.suptitle("chat servers on this machine (chat-load; text protocol unless IRC)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"chart: {path}"


def _bars(
    ax: Any,
    results: list[Result],
    servers: list[str],
    colors: dict[str, str],
    value: Callable[[Result], float | None],
    label: Callable[[float], str],
    ylabel: str,
    title: str,
    inner: Callable[[Result], float | None] | None = None,
    log: bool = True,
) -> None:
    """One group of bars per scenario, one bar per server; a failed run is marked FAILED."""
    scenario_names = list(dict.fromkeys(r.scenario for r in results))
    width = 0.8 / max(1, len(servers))
    labelled: set[str] = set()
    for i, server in enumerate(servers):
        for x, scenario in enumerate(scenario_names):
            r = next((r for r in results if r.server == server and r.scenario == scenario), None)
            if r is None:
                continue
            where = x + i * width
            v = value(r)
            if v is None or v <= 0:
                ax.text(
                    where,
                    0.02,
                    "no data",
                    rotation=90,
                    fontsize=7,
                    ha="center",
                    va="bottom",
                    transform=ax.get_xaxis_transform(),
                )
                continue
            ax.bar(
                where,
                v,
                width,
                color=colors[server],
                alpha=0.45 if inner is not None else 1.0,
                label=None if server in labelled else server,
            )
            labelled.add(server)
            if inner is not None and inner(r):
                ax.bar(where, inner(r), width * 0.6, color=colors[server])
            text = label(v) + ("" if r.ok else " FAILED")
            ax.text(where, v, text, rotation=90, fontsize=7, ha="center", va="bottom")
    ax.set_xticks([x + width * (len(servers) - 1) / 2 for x in range(len(scenario_names))])
    ax.set_xticklabels(scenario_names, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    # a lone scenario (the idle one) keeps bars of the usual width
    last = max(len(scenario_names), 3) - 1
    ax.set_xlim(-width / 2 - 0.1, last + 0.8 - width / 2 + 0.1)
    values = [v for r in results if (v := value(r)) is not None and v > 0]
    if inner is not None:
        values += [v for r in results if (v := inner(r)) is not None and v > 0]
    if log and values:
        ax.set_yscale("log")
        # the smallest bar a decade tall at least; room for the labels above the tallest
        ax.set_ylim(min(values) / 10, max(values) * 10)
    elif values:
        ax.set_ylim(0, max(values) * 1.3)


def _count_label(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    if value >= 1e3:
        return f"{value / 1e3:.0f}k"
    return f"{value:.0f}"


def _ms_label(value: float) -> str:
    return f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.1f} ms"


def load_results(path: Path) -> list[Result]:
    """Results from a results.json written by this script (unknown keys ignored)."""
    known = set(Result.__dataclass_fields__)
    return [
        Result(**{k: v for k, v in row.items() if k in known})
        for row in json.loads(path.read_text())
    ]


def out_dir(quick: bool, out: Path | None) -> Path:
    """Where results go: --out, else the committed folder for a full run, a scratch one if quick."""
    if out is not None:
        return out
    return QUICK_RESULTS_DIR if quick else RESULTS_DIR


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds' smoke run")
    parser.add_argument("--only", action="append", help="only servers whose name contains this")
    parser.add_argument(
        "--scenario", action="append", help="only scenarios whose name contains this"
    )
    parser.add_argument(
        "--irc-server",
        action="append",
        metavar="NAME=PORT:PID",
        help="an IRC server already running on 127.0.0.1:PORT (process PID, for its CPU and "
        "memory) to run the IRC scenarios against too, e.g. ngircd=16667:1234",
    )
    parser.add_argument(
        "--idle",
        type=int,
        default=5000,
        metavar="N",
        help="connections in the idle scenario (the servers run with --max-clients 12000)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for results.json and chart.png (default: benchmarks/results, which is "
        "committed; with --quick, benchmarks/results-quick, which git ignores)",
    )
    parser.add_argument(
        "--chart-only",
        type=Path,
        metavar="RESULTS_JSON",
        help="run nothing: draw chart.png from this results.json (into --out, else its folder)",
    )
    args = parser.parse_args()
    if args.chart_only is not None:
        out = args.out or args.chart_only.parent
        out.mkdir(parents=True, exist_ok=True)
        print(chart(load_results(args.chart_only), out / "chart.png"))
        return 0
    out = out_dir(args.quick, args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}", file=sys.stderr)
    external = []
    for spec in args.irc_server or []:
        name, _, where = spec.partition("=")
        port, _, pid = where.partition(":")
        external.append(Server(name, [], speaks_irc=True, external=(int(port), int(pid))))
    results = run(args.quick, args.only, args.scenario, external, args.idle)
    print(table(results))
    print()
    for line in ratios(results):
        print(line)
    (out / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    print(f"\njson: {out / 'results.json'}")
    print(chart(results, out / "chart.png"))
    return 0 if all(r.ok for r in results if r.server == "threadroom") else 1


if __name__ == "__main__":
    sys.exit(main())
