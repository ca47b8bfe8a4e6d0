"""chat-load against a real in-process server on loopback: it counts exactly, and says why."""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from loadtool import LoadConfig, LoadReport, run_load
from loadtool import run as load
from loadtool.cli import main
from loadtool.codecs import BARRIER, CODECS, JOIN, LOAD, OTHER
from loadtool.report import Latency, latency_of

ROOT = Path(__file__).resolve().parent.parent


def test_safe_server_delivers_everything_exactly_once_in_order(make_server):
    server = make_server(flood_rate=0)
    config = LoadConfig(port=server.address[1], clients=30, messages=20, rate=0, duration=30)
    report = run_load(config)
    assert report.joined == 30
    assert report.deliveries_expected == 30 * 29 * 20
    assert report.deliveries_received == report.deliveries_expected
    assert (report.lost, report.duplicated, report.out_of_order) == (0, 0, 0)
    assert report.latency is not None
    assert report.latency.p50_ms <= report.latency.p99_ms <= report.latency.max_ms
    assert report.ok


def test_default_pacing_stays_under_default_flood_control(server):
    report = run_load(LoadConfig(port=server.address[1], clients=8, messages=25, duration=30))
    assert report.flood_limited == 0
    assert report.disconnected == {}
    assert report.ok, report.format_text()


def test_text_protocol_bots_verify_too(make_server):
    server = make_server(flood_rate=0)
    config = LoadConfig(port=server.address[1], clients=8, messages=20, rate=0, protocol="text")
    report = run_load(config)
    assert report.deliveries_received == 8 * 7 * 20
    assert report.ok, report.format_text()


def test_irc_protocol_bots_verify_on_the_irc_port(make_server):
    server = make_server(flood_rate=0, irc_port=0)
    config = LoadConfig(
        port=server.irc_address[1], clients=8, messages=20, rate=0, protocol="irc", duration=30
    )
    report = run_load(config)
    assert report.joined == 8
    assert report.deliveries_received == 8 * 7 * 20
    assert report.ok, report.format_text()


def test_irc_bots_flooding_are_reported_as_flood_control(make_server):
    server = make_server(irc_port=0)
    config = LoadConfig(port=server.irc_address[1], clients=3, messages=200, rate=0, protocol="irc")
    report = run_load(config)
    assert sum(report.disconnected.values()) == 3
    assert report.flood_limited == 3
    assert report.lost == 0


def test_flooding_is_reported_as_flood_control_not_as_loss(server):
    report = run_load(LoadConfig(port=server.address[1], clients=4, messages=200, rate=0))
    assert sum(report.disconnected.values()) == 4
    # A kicked bot may miss its own "kicked" line when the server's close resets the connection
    # (its unread flood is still queued); the others' leave events usually tell, so >= 1.
    assert report.disconnected.get("kicked for flooding", 0) >= 1
    assert report.lost == 0
    assert not report.ok
    assert "flood control" in report.format_text()


def test_a_slow_client_does_not_hold_back_the_others(make_server):
    server = make_server(flood_rate=0)
    config = LoadConfig(
        port=server.address[1], clients=6, messages=300, rate=0, slow_clients=1, duration=30
    )
    report = run_load(config)
    assert report.deliveries_received == 6 * 5 * 300
    assert report.ok, report.format_text()


def test_nobody_can_join_a_closed_port_and_the_run_says_so():
    # A bound socket that does not listen: connections are refused, and no other program can
    # take the port meanwhile.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        report = run_load(LoadConfig(port=port, clients=3, messages=1, duration=5))
    assert report.joined == 0
    assert list(report.join_failures) == ["cannot connect: ECONNREFUSED"]
    assert not report.ok


def test_main_prints_json_and_exits_0(make_server, capsys):
    server = make_server(flood_rate=0)
    argv = [
        "--port",
        str(server.address[1]),
        "--clients",
        "5",
        "--messages",
        "10",
        "--rate",
        "0",
        "--json",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["deliveries_received"] == 5 * 4 * 10


def test_console_script_runs_as_a_subprocess(make_server):
    server = make_server()
    # The installed entry point next to this interpreter (pip install -e .) if it was installed
    # from this tree's pyproject.toml, else the module the entry point names.
    declared = 'chat-load = "loadtool.cli:main"'
    assert declared in (ROOT / "pyproject.toml").read_text()
    installed = [e.value for e in entry_points(group="console_scripts", name="chat-load")]
    script = shutil.which("chat-load", path=os.path.dirname(sys.executable))
    use_script = script is not None and installed == ["loadtool.cli:main"]
    program = [script] if use_script and script else [sys.executable, "-m", "loadtool"]
    command = [
        *program,
        "--port",
        str(server.address[1]),
        "--clients",
        "4",
        "--messages",
        "5",
        "--duration",
        "20",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "lost               0" in done.stdout
    assert "result             OK" in done.stdout


def test_a_full_server_is_reported_as_refusal(make_server):
    server = make_server(max_clients=3)
    report = run_load(LoadConfig(port=server.address[1], clients=5, messages=2, join_timeout=5))
    assert report.joined == 3
    assert report.join_failures == {"refused: server full": 2}
    assert not report.ok


@pytest.mark.stress
@pytest.mark.timeout(120)
def test_hundreds_of_clients_from_one_process(make_server):
    server = make_server(flood_rate=0)
    config = LoadConfig(
        port=server.address[1], clients=200, messages=3, rate=0, duration=40, join_timeout=30
    )
    report = run_load(config)
    assert report.joined == 200
    assert report.deliveries_received == 200 * 199 * 3
    assert report.ok, report.format_text()


def test_an_aggregate_rate_paces_the_whole_run(make_server):
    server = make_server(flood_rate=0)
    config = LoadConfig(port=server.address[1], clients=10, messages=10, rate=200, duration=20)
    report = run_load(config)
    assert report.ok, report.format_text()
    # 100 messages at 200/s cannot take less than about half a second (a lower bound only).
    assert report.elapsed_s >= 0.4


def test_progress_is_reported_while_running(server):
    lines: list[str] = []
    config = LoadConfig(port=server.address[1], clients=3, messages=12, duration=20)
    report = run_load(config, progress=lines.append)
    assert report.ok
    assert lines
    assert all(line.startswith("\r[") and "deliveries" in line for line in lines)


@pytest.mark.skipif(sys.platform != "linux", reason="kernel receive timestamps: Linux only")
def test_latency_is_stamped_by_the_kernel_when_the_bytes_arrive():
    # chat-load's latency clock: what it reads for a line is when the line reached the socket,
    # not when its one thread got round to reading it.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sending = socket.create_connection(listener.getsockname())
        receiving, _ = listener.accept()
        with sending, receiving:
            receiving.setsockopt(socket.SOL_SOCKET, load._SO_TIMESTAMPNS, 1)
            # The kernel switches stamping on a moment after the first socket asks (deferred
            # work): the first packets may come unstamped, and chat-load then uses its own clock.
            for _ in range(50):
                before = time.time_ns()
                sending.sendall(b"load bot1 #0 t=0\n")
                assert select.select([receiving], [], [], 10)[0]
                time.sleep(0.02)  # the reader is late: the stamp must not be
                _, ancillary, _, _ = receiving.recvmsg(100, load._ANCILLARY_BYTES)
                read_at = time.time_ns()
                if arrived := load._arrival_ns(ancillary):
                    break
    assert before <= arrived <= read_at - 15_000_000


# -- verifying as the run goes (a long run must not stall on a backlog) --------------------------


def test_deliveries_are_verified_in_bounded_slices_while_the_run_goes(make_server):
    # A long run used to keep up to 256 MiB of deliveries and verify them in one go: 17 s in
    # which the one thread neither read nor sent. Here the bound is 64 KiB and the run delivers
    # over a hundred times that: what waits is bounded by the bound plus one read, and no step
    # verifies more than one slice.
    bound = 64 * 1024
    # Reading waits for verifying past the bound: a server queue that holds the whole run, so
    # that the server does not drop the bots for reading slowly.
    server = make_server(flood_rate=0, sendq_bytes=64 * 1024 * 1024)
    config = LoadConfig(
        port=server.address[1],
        clients=40,
        messages=50,
        rate=0,
        duration=60,
        max_unverified_bytes=bound,
    )
    report = run_load(config)
    assert report.ok, report.format_text()
    assert report.deliveries_received == 40 * 39 * 50
    delivered_bytes = report.deliveries_received * len('{"type": "message", "text": "load "}')
    # one read (RECV_BYTES) past the bound, plus the partial line carried into it
    held = bound + load.RECV_BYTES + 64 * 1024
    assert delivered_bytes > 5 * held
    assert 0 < report.unverified_peak_bytes <= held
    assert 0 < report.verify_step_max <= load.VERIFY_SLICE_LINES
    assert report.deliveries_received > 50 * load.VERIFY_SLICE_LINES
    assert f"in steps of at most {report.verify_step_max} deliveries" in report.format_text()


def test_paced_bots_never_burst_past_the_servers_flood_control_after_a_stall():
    # The server's own flood gate (default: 10 lines/s, bursts of 20) judges a bot paced at
    # 8 messages/s whose loop stalls for 17 s twice: it catches up with a few messages, not 136.
    gate_rate, gate_burst = 10.0, 20
    verdicts = _verdicts_after_stalls(load.BOT_BURST, gate_rate, gate_burst)
    assert len(verdicts) > 200
    assert set(verdicts) == {"accept"}
    # The check can fail: catching up on everything owed at once floods.
    assert set(_verdicts_after_stalls(10**9, gate_rate, gate_burst)) != {"accept"}


def _verdicts_after_stalls(catch_up: int, gate_rate: float, gate_burst: int) -> list[str]:
    from chat.flood import FloodGate  # the server's, pure: it takes the clock's reading

    schedule = load.Schedule(interval=1 / 8, catch_up=catch_up, first_due=0.0)
    gate = FloodGate(gate_rate, gate_burst, now=0.0)
    stalls = [(5.0, 22.0), (30.0, 47.0)]  # the loop did not run between these times
    verdicts = []
    tick = 0
    while tick < 60_000:  # 60 s of loop turns, one a millisecond (a pure clock, no sleeping)
        now = tick / 1000
        tick += 1
        if any(start < now < end for start, end in stalls):
            continue
        for _ in range(schedule.take(now, most=16)):
            verdicts.append(gate.check(now).value)
    return verdicts


def test_a_schedule_that_fell_behind_slips_and_says_so():
    schedule = load.Schedule(interval=0.5, catch_up=10, first_due=0.0)
    assert schedule.take(0.0, most=16) == 1
    assert schedule.take(0.4, most=16) == 0
    assert schedule.take(100.0, most=16) == 10  # owed 200: sends 10, the rest slips
    assert schedule.slips == 1
    assert schedule.take(100.4, most=16) == 0
    assert schedule.take(100.5, most=16) == 1  # then back to one every 0.5 s


# -- an honest report ------------------------------------------------------------------------------


def test_a_rate_is_never_shown_beside_a_zero_count(server):
    # Flat out against default flood control every bot is cut off: nothing can be checked, yet
    # deliveries did arrive. The report used to say "0 received of 0 expected" and "86,391
    # deliveries/s" beside it.
    report = run_load(LoadConfig(port=server.address[1], clients=4, messages=200, rate=0))
    text = report.format_text()
    assert report.deliveries_expected == 0
    assert "0 received of 0 expected" not in text
    assert "deliveries         none to check" in text
    rate_line = next(line for line in text.splitlines() if line.startswith("delivery rate"))
    if report.deliveries_arrived:
        assert f"({report.deliveries_arrived} arrived in " in rate_line
        assert f"{report.deliveries_arrived} more arrived" in text
    else:
        assert "not measured" in rate_line


def test_no_rate_when_nothing_arrived_and_the_count_names_its_reason():
    report = LoadReport(clients=3, slow_clients=0, messages_per_client=5, protocol="json", joined=1)
    report.messages_sent = 5
    text = report.format_text()
    assert "deliveries/s" not in text
    assert "delivery rate      not measured: no delivery arrived" in text
    assert "deliveries         none to check: fewer than 2 bots joined" in text


# -- the bots' codecs, pure ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        b"*** Online (3): bot0, bot1, bot2",  # /who of servers before /users existed
        b"*** Users in #lobby (3): bot0, bot1, bot2",  # /who of later ones: the room's members
        b"*** Users in #lobby (3): bot0, bot1, bot2\r",
    ],
)
def test_the_text_barrier_accepts_either_who_reply(reply):
    assert CODECS["text"].barrier() == b"/who\n"
    assert CODECS["text"].classify(reply) == (BARRIER, None)


def test_text_lines_like_the_barrier_reply_are_not_taken_for_it():
    text = CODECS["text"]
    assert text.classify(b"*** Users joined (2 online)") == (JOIN, "Users")
    assert text.classify(b"<Users> in #lobby (3)")[0] == OTHER
    assert text.classify(b"*** Online: bot0")[0] == OTHER
    assert text.classify(b"<bot1> load bot1 #4 t=99") == (LOAD, (b"bot1", b"4", b"99"))


def test_latency_percentiles_from_a_histogram_match_a_sorted_list():
    # chat-load counts latencies per microsecond instead of keeping each one (12 million in a
    # 10-minute run); the percentiles must be those of the sorted list, nearest rank.
    rng = random.Random(7)
    for n in (1, 2, 3, 10, 99, 1000, 4321):
        micros = [int(rng.lognormvariate(7, 1.5)) for _ in range(n)]
        histogram = dict(Counter(micros))
        ordered = sorted(micros)

        def nearest_rank(q: float, ordered: list[int] = ordered) -> float:
            rank = min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))
            return ordered[rank] / 1000

        expected = Latency(*(nearest_rank(q) for q in (0.50, 0.95, 0.99, 1.0)))
        assert latency_of(histogram) == expected
    assert latency_of({}) is None


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--messages", "x"], "argument --messages: not a number: 'x'"),
        (["--clients", "many"], "argument --clients: not a number: 'many'"),
        (["--rate", "fast"], "argument --rate: not a number: 'fast'"),
        (["--duration", "long"], "argument --duration: not a number: 'long'"),
    ],
)
def test_a_bad_number_is_named_in_words(capsys, args, said):
    """`--messages x` said `invalid _count value: 'x'`: the name of a function inside."""
    from loadtool.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(args)
    error = capsys.readouterr().err
    assert said in error, error
    assert "_count" not in error
