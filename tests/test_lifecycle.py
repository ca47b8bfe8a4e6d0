"""Start, stop and the chat-server process: clean shutdown, clear errors, exit codes."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from chat.config import ServerConfig
from chat.server import SHUTDOWN_FLUSH_S, ChatServer, ListenError
from tests.peers import TIMEOUT_S, JsonPeer, Peer, TextPeer, wait_until


def test_stop_says_goodbye_and_leaves_no_thread(make_server):
    before = set(threading.enumerate())
    server = ChatServer(ServerConfig(port=0)).start()
    alice = TextPeer(server.address, "alice")
    bot = JsonPeer(server.address, "bot")
    lurker = Peer(server.address)  # never registers
    # Connected is not yet accepted: without this, stop() can close the listener with the
    # lurker still in its backlog (a reset, no goodbye), a race in the test, not the server.
    wait_until(lambda: server.client_count == 3)
    server.stop()
    assert alice.until_closed()[-1] == "*** server shutting down"
    notice = json.loads(bot.until_closed()[-1])
    assert (notice["type"], notice["text"]) == ("notice", "server shutting down")
    assert lurker.until_closed()[-1] == "*** server shutting down"
    assert set(threading.enumerate()) <= before
    server.stop()  # twice is fine


def test_one_thread_per_client_plus_the_accept_sender_and_waker_threads():
    before = set(threading.enumerate())
    with ChatServer(ServerConfig(port=0)) as server:
        peers = [TextPeer(server.address, f"user{n}") for n in range(10)]
        peers[0].send("hello all\n")
        for peer in peers[1:]:
            peer.expect("<user0> hello all")
        names = sorted(t.name.split()[0] for t in set(threading.enumerate()) - before)
        assert names == ["accept"] + ["reader"] * 10 + ["sender", "waker"]
        for peer in peers:
            peer.close()


def _kernel_send_buffer_max() -> int:
    """The most a socket's send buffer grows to (Linux autotuning); 4 MiB where unknown."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as limits:
            return int(limits.read().split()[2])
    except (OSError, IndexError, ValueError):
        return 4 * 1024 * 1024


def _timed_stop(*, stalled_client: bool) -> tuple[float, socket.socket | None]:
    """Starts a server; if asked, has a talker queue more for a client that never reads than
    the kernel buffers hold (a big send queue, so it is not dropped for that); times stop()."""
    server = ChatServer(ServerConfig(port=0, flood_rate=0, sendq_bytes=256 * 1024**2)).start()
    stalled = None
    if stalled_client:
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(server.address)
        stalled.sendall(b"stalled\n")
    talker = JsonPeer(server.address, "talker")
    text = "z" * 3000
    for n in range((_kernel_send_buffer_max() + 2 * 1024**2) // len(text)):
        talker.send_json({"type": "message", "text": f"{n} {text}"})
    talker.sync()  # everything said has been fanned out
    start = time.monotonic()
    server.stop()
    elapsed = time.monotonic() - start
    assert json.loads(talker.until_closed()[-1])["text"] == "server shutting down"
    return elapsed, stalled


def test_stop_does_not_wait_for_a_client_that_never_reads():
    # The baseline, on the same machine now: the same stop with nobody stalled.
    calm, _ = _timed_stop(stalled_client=False)
    elapsed, stalled = _timed_stop(stalled_client=True)
    assert stalled is not None
    # It waited SHUTDOWN_FLUSH_S for the goodbye to go out (so the client really stalled)...
    assert elapsed >= SHUTDOWN_FLUSH_S
    # ... then cut the client off: at most a few calm stops more, whatever the machine's load.
    assert elapsed < SHUTDOWN_FLUSH_S + 5 * calm + 0.5, (elapsed, calm)
    # ... and it was cut off indeed: what the kernel buffered for it, then the end.
    stalled.settimeout(TIMEOUT_S)
    with contextlib.suppress(ConnectionResetError):
        while stalled.recv(65536):
            pass
    stalled.close()


def test_context_manager_and_address():
    with ChatServer(ServerConfig(port=0)) as server:
        host, port = server.address
        assert host == "127.0.0.1"
        assert port > 0
        TextPeer((host, port), "alice")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=1)


def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    server = ChatServer(ServerConfig(host="::1", port=0))
    try:
        server.start()
    except OSError:
        pytest.skip("::1 not available")
    try:
        peer = TextPeer(server.address, "six")
        assert peer.welcome.startswith("* Hello six")
    finally:
        server.stop()


def test_ipv6_peers_are_logged_with_brackets(caplog):
    # "::1:41234" reads as an address with no port; RFC 3986's "[::1]:41234" does not. Every
    # label: listening, connected, refused, the reader thread's name, the connection's label.
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    caplog.set_level(logging.DEBUG, logger="chat")
    server = ChatServer(ServerConfig(host="::1", port=0, max_clients=1))
    try:
        server.start()
    except OSError:
        pytest.skip("::1 not available")
    try:
        port = server.address[1]
        assert f"listening on [::1]:{port}" in caplog.text
        peer = TextPeer(server.address, "six")
        here = f"[::1]:{peer.sock.getsockname()[1]}"
        assert f"reader {here}" in [t.name for t in threading.enumerate()]
        refused = socket.create_connection(server.address, timeout=5)  # over max_clients
        assert refused.recv(1024).startswith(b"!")
        peer.send("/quit\n")
        peer.until_closed()
        refused.close()
    finally:
        server.stop()
    assert f"{here} connected" in caplog.text
    assert f"{here} six joined as six" in caplog.text
    assert f"{here} six disconnected" in caplog.text
    assert re.search(r"\[::1\]:\d+ refused \(", caplog.text), caplog.text
    assert "::1:" not in caplog.text.replace("[::1]:", "")
    with socket.socket(socket.AF_INET6) as taken:
        taken.bind(("::1", 0))
        taken.listen()
        busy = ChatServer(ServerConfig(host="::1", port=taken.getsockname()[1]))
        with pytest.raises(ListenError) as refused_port:
            busy.start()
    assert refused_port.value.message.startswith("cannot listen on [::1]:"), refused_port.value


def test_an_ipv6_client_leaving_frees_its_place_under_the_per_address_cap():
    """The per-address count is given back by address at the end: an IPv6 address (kept as
    "[::1]:port") must come back as "::1", or every later client from it is refused."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    config = ServerConfig(host="::1", port=0, max_per_address=1, limit_loopback=True)
    server = ChatServer(config)
    try:
        server.start()
    except OSError:
        pytest.skip("::1 not available")
    try:
        for n in range(3):  # one at a time: each is let in once the one before has gone
            peer = TextPeer(server.address, f"six{n}")
            assert peer.welcome.startswith(f"* Hello six{n}")
            peer.send("/quit\n")
            peer.until_closed()
            wait_until(lambda: server.client_count == 0)
    finally:
        server.stop()


def _start_process(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "chat", "--port", "0", *args],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    assert match, line
    return proc, int(match.group(1))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_process_exits_0_quickly_on_signal_with_clients_connected(sig):
    proc, port = _start_process()
    try:
        alice = TextPeer(("127.0.0.1", port), "alice")
        bob = JsonPeer(("127.0.0.1", port), "bob")
        proc.send_signal(sig)
        # A guard against a hang, not a speed claim (test_stop_does_not_wait_for_a_client_...
        # compares stop times): the clients are connected and never hang up themselves.
        assert proc.wait(timeout=10 * SHUTDOWN_FLUSH_S) == 0
        assert alice.until_closed()[-1] == "*** server shutting down"
        assert bob.until_closed()
        log = proc.stderr.read()
        assert "Traceback" not in log
        # one line for all at INFO (#14: each one's line is at DEBUG level)
        assert "2 client(s) disconnected (server shutting down)" in log
    finally:
        proc.kill()
        proc.wait()


def test_log_lines_have_time_level_address_and_nick():
    proc, port = _start_process()
    try:
        alice = TextPeer(("127.0.0.1", port), "alice")
        local = alice.sock.getsockname()
        alice.send("/quit bye\n")
        alice.until_closed()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)
        log = proc.stderr.read()
        assert re.search(
            rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO 127\.0\.0\.1:{local[1]} alice "
            r"disconnected \(quit\)$",
            log,
            re.MULTILINE,
        ), log
    finally:
        proc.kill()
        proc.wait()


def test_port_in_use_is_one_clear_line_and_exit_2():
    with ChatServer(ServerConfig(port=0)) as server:
        result = subprocess.run(
            [sys.executable, "-m", "chat", "--port", str(server.address[1])],
            capture_output=True,
            text=True,
            timeout=10,
        )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "cannot listen on 127.0.0.1" in result.stderr
    assert "in use" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "70000"],
        ["--port", "x"],
        ["--max-clients", "0"],
        ["--flood-rate", "-1"],
        ["--bogus"],
        # A send queue shorter than one long line: every member kicked by one long message.
        ["--sendq-bytes", "2000"],
        # A negative pause crashed every join of the unsafe registry (time.sleep(-0.001)).
        ["--unsafe-registry", "--race-window-ms", "-1"],
    ],
)
def test_bad_options_are_one_line_and_exit_2(args):
    result = subprocess.run(
        [sys.executable, "-m", "chat", *args],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("chat-server: error:")


def test_help_explains_every_option():
    result = subprocess.run(
        [sys.executable, "-m", "chat", "--help"],
        capture_output=True,
        text=True,
        timeout=10,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0
    for option in [
        "--host",
        "--port",
        "--max-clients",
        "--log-level",
        "--flood-rate",
        "--sendq-bytes",
        "--idle-timeout",
        "--register-timeout",
        "--max-per-address",
    ]:
        assert option in result.stdout
