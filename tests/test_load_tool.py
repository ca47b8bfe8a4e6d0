"""chat-load against a real in-process server on loopback: it counts exactly, and says why."""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time

import pytest

from chat import load
from chat.load import LoadConfig, main, run_load


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
    # The installed entry point next to this interpreter (pip install -e .), else the module.
    script = shutil.which("chat-load", path=os.path.dirname(sys.executable))
    program = [script] if script else [sys.executable, "-m", "chat.load"]
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
