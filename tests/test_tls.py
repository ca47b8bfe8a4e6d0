"""TLS on the server's ports (#13): real handshakes with certificates from `trustme`.

The server side: text/JSON and IRC over TLS, plaintext and garbage on a TLS port, a stalled
handshake, close_notify, a certificate the client does not trust, bad files at start and at
reload. The client side (verification, trust on first use) is in tests/test_tls_client.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from chat.config import ServerConfig
from chat.server import ChatServer
from chat.tls import TlsConfigError, fingerprint
from tests.peers import IrcPeer, JsonPeer, Peer, TextPeer, wait_until

trustme = pytest.importorskip("trustme")


class Certs:
    """A CA, and a server certificate for localhost/127.0.0.1 written to PEM files."""

    def __init__(self, directory: Path, name: str = "server") -> None:
        self.ca = trustme.CA()
        issued = self.ca.issue_cert("localhost", "127.0.0.1", "::1")
        self.cert = directory / f"{name}-cert.pem"
        self.key = directory / f"{name}-key.pem"
        self.ca_file = directory / f"{name}-ca.pem"
        self.cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(self.key))
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def options(self, **more: Any) -> dict[str, Any]:
        return {"tls_cert": str(self.cert), "tls_key": str(self.key), **more}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("tls"))


def _no_errors(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


def test_text_json_and_plain_users_talk_across_tls_and_plaintext(make_server, certs):
    server = make_server(**certs.options(tls_port=0))
    context = certs.client_context()
    alice = TextPeer(server.tls_address, "alice", tls=context)
    assert alice.sock.version() in ("TLSv1.2", "TLSv1.3")
    bob = TextPeer(server.address, "bob")
    carol = JsonPeer(server.tls_address, "carol", tls=context)
    alice.send("hello over TLS\n")
    assert bob.expect("<alice>") == "<alice> hello over TLS"
    assert carol.expect_type("message")["text"] == "hello over TLS"
    bob.send("and back in clear\n")
    assert alice.expect("<bob>") == "<bob> and back in clear"


def test_a_long_reply_and_a_busy_client_over_tls(make_server, certs):
    """Reads and writes of one TLS connection at once, from its reader and the sender: a user
    pasting lines while the server fans out to it (and a reply larger than a TLS record)."""
    server = make_server(**certs.options(tls_port=0, flood_rate=0))
    context = certs.client_context()
    alice = JsonPeer(server.tls_address, "alice", tls=context)
    bob = JsonPeer(server.tls_address, "bob", tls=context)
    text = "x" * 400
    alice.send("".join(f'{{"type":"message","text":"{i} {text}"}}\n' for i in range(300)))
    bob.send("".join(f'{{"type":"message","text":"b{i}"}}\n' for i in range(300)))
    for reader, writer, expected in (
        (bob, "alice", [f"{i} {text}" for i in range(300)]),
        (alice, "bob", [f"b{i}" for i in range(300)]),
    ):
        got: list[str] = []
        while len(got) < len(expected):
            event = reader.event()
            if event["type"] == "message" and event["from"] == writer:
                got.append(event["text"])
        assert got == expected


def test_a_client_reading_slowly_over_tls_gets_every_byte_in_order(make_server, certs):
    """Ciphertext the socket does not take at once waits in the sender's buffer, in order, while
    the sender holds the outbox's claim: a small receive buffer forces partial sends."""
    server = make_server(**certs.options(tls_port=0, flood_rate=0, sendq_bytes=8 * 1024 * 1024))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(server.tls_address)
    slow = certs.client_context().wrap_socket(sock, server_hostname="localhost")
    slow.sendall(b"slow\n")
    received = b""
    while b"*** slow joined" not in received:
        received += slow.recv(65536)
    # And a small send buffer on the server's side of it, so that send() takes part of a batch.
    (connection,) = list(server._connections)
    connection.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    writer = TextPeer(server.address, "writer")
    text = "y" * 300
    count = 6000
    writer.send("".join(f"{i} {text}\n" for i in range(count)))  # 1.8 MB, under the SendQ
    wait_until(lambda: any(c.unsent for c in list(server._connections)))  # it is waiting
    lines: list[str] = []
    buffer = received.split(b"*** slow joined", 1)[1]
    while len(lines) < count:
        chunk = slow.recv(65536)
        assert chunk, "closed"
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        lines += [line.decode() for line in complete if line.startswith(b"<writer>")]
    assert lines == [f"<writer> {i} {text}" for i in range(count)]


def test_irc_over_tls(make_server, certs):
    server = make_server(**certs.options(irc_port=0, irc_tls_port=0))
    secure = IrcPeer(server.irc_tls_address, "sec", tls=certs.client_context())
    plain = IrcPeer(server.irc_address, "plain")
    secure.send_line("JOIN #room")
    secure.expect_cmd("366")
    plain.send_line("JOIN #room")
    plain.expect_cmd("366")
    secure.send_line("PRIVMSG #room :over TLS")
    message = plain.expect_cmd("PRIVMSG")
    assert list(message.params) == ["#room", "over TLS"]


def test_irc_library_client_with_ssl(make_server, certs):
    """jaraco's `irc` library, connecting with its SSL wrapper, end to end."""
    irc_client = pytest.importorskip("irc.client")
    irc_connection = pytest.importorskip("irc.connection")
    import queue
    import threading

    server = make_server(**certs.options(irc_tls_port=0))
    context = certs.client_context()
    reactor = irc_client.Reactor()
    events: queue.Queue[tuple[str, object]] = queue.Queue()

    def wrap(sock: socket.socket) -> ssl.SSLSocket:
        return context.wrap_socket(sock, server_hostname="localhost")

    factory = irc_connection.Factory(wrapper=wrap)
    connection = reactor.server().connect(
        *server.irc_tls_address, "libbot", connect_factory=factory
    )
    connection.add_global_handler(
        "welcome", lambda c, e: (events.put(("welcome", 1)), c.join("#t"))
    )
    connection.add_global_handler("join", lambda c, e: events.put(("join", e.source.nick)))
    connection.add_global_handler(
        "pubmsg", lambda c, e: events.put(("pubmsg", (e.source.nick, e.arguments[0])))
    )
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            reactor.process_once(0.05)

    loop = threading.Thread(target=run, name="irc-lib reactor")
    loop.start()
    try:
        assert events.get(timeout=10) == ("welcome", 1)
        assert events.get(timeout=10) == ("join", "libbot")
        peer = IrcPeer(server.irc_tls_address, "peer", tls=context)
        peer.send_line("JOIN #t")
        peer.expect_cmd("366")
        peer.send_line("PRIVMSG #t :hello library")
        assert events.get(timeout=10) == ("join", "peer")
        assert events.get(timeout=10) == ("pubmsg", ("peer", "hello library"))
        connection.privmsg("#t", "hello peer")
        assert list(peer.expect_cmd("PRIVMSG").params) == ["#t", "hello peer"]
    finally:
        stop.set()
        loop.join(10)
        connection.close()


@pytest.mark.parametrize(
    "what",
    [
        b"alice\r\n",  # a person with nc on the wrong port
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        bytes(range(256)) * 4,  # garbage
        b"\x16\x03\x01\x00\x05hello",  # a TLS record header, then nonsense
    ],
    ids=["plaintext", "http", "garbage", "bad-record"],
)
def test_not_tls_on_a_tls_port_is_closed_quietly(make_server, certs, caplog, what):
    caplog.set_level(logging.DEBUG, logger="chat")
    server = make_server(**certs.options(tls_port=0))
    peer = Peer(server.tls_address)
    peer.send(what)
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := peer.sock.recv(4096):
            received += chunk
    # Nothing, or a TLS alert record (type 21) saying why: never a chat line.
    assert received == b"" or (received[0] == 21 and len(received) == 7), received
    wait_until(lambda: server.client_count == 0)
    _no_errors(caplog)
    assert any("handshake failed" in r.getMessage() for r in caplog.records)
    # The port still works for a real TLS client.
    TextPeer(server.tls_address, "after", tls=certs.client_context())


@pytest.mark.parametrize("register_timeout_s", [0.3, None], ids=["registration", "no-limit"])
def test_a_stalled_handshake_is_cut_at_the_registration_deadline(
    make_server, certs, caplog, monkeypatch, register_timeout_s
):
    """The handshake is inside the registration deadline; with none, HANDSHAKE_TIMEOUT_S."""
    caplog.set_level(logging.DEBUG, logger="chat")
    monkeypatch.setattr("chat.tls.HANDSHAKE_TIMEOUT_S", 0.3)
    server = make_server(**certs.options(tls_port=0, register_timeout_s=register_timeout_s))
    started = time.monotonic()
    stalled = Peer(server.tls_address)
    half = Peer(server.tls_address)
    half.send(b"\x16\x03\x01")  # the start of a ClientHello, and nothing more
    for peer in (stalled, half):
        with pytest.raises(EOFError):
            peer.line(timeout=5)
    # The deadline (0.3 s), and no more than the time it takes to cut: no linger, no flush wait.
    assert time.monotonic() - started < 0.3 + 0.9
    wait_until(lambda: server.client_count == 0)
    _no_errors(caplog)


def test_an_untrusted_certificate_is_refused_by_the_client(make_server, certs, caplog):
    caplog.set_level(logging.DEBUG, logger="chat")
    server = make_server(**certs.options(tls_port=0))
    with pytest.raises(ssl.SSLCertVerificationError):
        Peer(server.tls_address, tls=ssl.create_default_context())  # system CAs only
    wrong_name = certs.client_context()
    sock = socket.create_connection(server.tls_address, timeout=5)
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        wrong_name.wrap_socket(sock, server_hostname="chat.example.org")
    sock.close()
    wait_until(lambda: server.client_count == 0)
    _no_errors(caplog)


def test_the_server_says_close_notify_before_it_closes(make_server, certs):
    server = make_server(**certs.options(tls_port=0))
    context = certs.client_context()
    sock = socket.create_connection(server.tls_address, timeout=5)
    # suppress_ragged_eofs=False: a cut without close_notify would raise SSLEOFError.
    tls = context.wrap_socket(sock, server_hostname="localhost", suppress_ragged_eofs=False)
    tls.sendall(b"alice\n/quit\n")
    received = b""
    while chunk := tls.recv(65536):
        received += chunk
    assert received.endswith(b"*** Goodbye.\n")
    tls.close()


def test_close_notify_at_server_shutdown(certs):
    server = ChatServer(ServerConfig(host="127.0.0.1", port=0, tls_port=0, **certs.options()))
    server.start()
    context = certs.client_context()
    sock = socket.create_connection(server.tls_address, timeout=5)
    tls = context.wrap_socket(sock, server_hostname="localhost", suppress_ragged_eofs=False)
    tls.sendall(b"alice\n")
    received = tls.recv(65536)
    while b"joined" not in received:
        received += tls.recv(65536)
    import threading

    stopping = threading.Thread(target=server.stop, name="stop")  # we read meanwhile
    stopping.start()
    while chunk := tls.recv(65536):
        received += chunk
    assert b"server shutting down" in received
    tls.close()
    stopping.join(10)


def test_tls_only_opens_no_plaintext_port(make_server, certs):
    server = make_server(**certs.options(tls_port=0, irc_port=0, tls_only=True))
    with pytest.raises(AssertionError):
        _ = server.address
    with pytest.raises(AssertionError):
        _ = server.irc_address
    TextPeer(server.tls_address, "alice", tls=certs.client_context())


def test_bad_certificate_files_stop_the_start(tmp_path, certs):
    other = Certs(tmp_path, "other")
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(certs.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted-key.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    cases = {
        # (never a pass phrase prompt on the terminal, which would hang the start or a reload)
        "encrypted key": (str(certs.cert), str(encrypted), "the key is encrypted"),
        "missing": (str(tmp_path / "nope.pem"), str(certs.key), "cannot read --tls-cert"),
        "unreadable key": (str(certs.cert), str(tmp_path), "cannot read --tls-key"),
        "mismatch": (str(certs.cert), str(other.key), "is not the key of"),
        "not a cert": (str(certs.key), str(certs.key), "holds no certificate"),
        # Swapped: said in words, not as OpenSSL's "[SSL] PEM lib (_ssl.c:3905)".
        "swapped": (str(certs.key), str(certs.cert), "swapped"),
        "not a key": (str(certs.cert), str(certs.cert), "holds no private key"),
    }
    for cert, key, message in cases.values():
        server = ChatServer(ServerConfig(port=0, tls_port=0, tls_cert=cert, tls_key=key))
        with pytest.raises(TlsConfigError, match=message):
            server.start()


def test_a_reload_serves_new_clients_the_new_certificate_and_keeps_the_old_ones(
    make_server, certs, tmp_path
):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(certs.cert.read_bytes())
    key.write_bytes(certs.key.read_bytes())
    server = make_server(tls_port=0, tls_cert=str(cert), tls_key=str(key))
    old = TextPeer(server.tls_address, "old", tls=certs.client_context())
    renewed = Certs(tmp_path, "renewed")
    key.write_bytes(renewed.key.read_bytes())  # half-written: the pair does not match
    assert not server.reload_tls()
    cert.write_bytes(renewed.cert.read_bytes())
    assert server.reload_tls()
    assert server.tls is not None
    assert server.tls.fingerprint == fingerprint(str(renewed.cert))
    with pytest.raises(ssl.SSLCertVerificationError):
        Peer(server.tls_address, tls=certs.client_context())
    new = TextPeer(server.tls_address, "new", tls=renewed.client_context())
    old.send("still here\n")
    assert new.expect("<old>") == "<old> still here"


def test_chat_server_exits_2_on_a_bad_key_and_reloads_on_sighup(tmp_path, certs):
    """A real chat-server process: one clear line and exit 2 for a mismatched key; SIGHUP with
    clients connected reloads the certificate and drops nobody."""
    import subprocess
    import sys

    other = Certs(tmp_path, "other")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    base = [sys.executable, "-m", "chat", "--port", "0", "--tls-port", "0"]
    bad = subprocess.run(
        [*base, "--tls-cert", str(certs.cert), "--tls-key", str(other.key)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("chat-server: --tls-key ")
    assert "Traceback" not in bad.stderr

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(certs.cert.read_bytes())
    key.write_bytes(certs.key.read_bytes())
    process = subprocess.Popen(
        [*base, "--tls-cert", str(cert), "--tls-key", str(key)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        lines = []

        def wait_for(text: str) -> str:
            while True:
                line = process.stderr.readline()  # type: ignore[union-attr]
                assert line, f"chat-server ended; it said {lines}"
                lines.append(line)
                if text in line:
                    return line

        assert fingerprint(str(cert)) in wait_for("fingerprint")
        port = int(wait_for("TLS listening on").rsplit(":", 1)[1])
        alice = TextPeer(("127.0.0.1", port), "alice", tls=certs.client_context())
        cert.write_bytes(other.cert.read_bytes())
        key.write_bytes(other.key.read_bytes())
        process.send_signal(__import__("signal").SIGHUP)
        assert fingerprint(str(other.cert)) in wait_for("reloaded")
        bob = TextPeer(("127.0.0.1", port), "bob", tls=other.client_context())
        alice.send("after the reload\n")
        assert bob.expect("<alice>") == "<alice> after the reload"
        process.terminate()
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_chat_load_over_tls_exactly_once(make_server, certs):
    from loadtool import LoadConfig, run_load

    server = make_server(**certs.options(tls_port=0, flood_rate=0))
    config = LoadConfig(
        port=server.tls_address[1],
        clients=10,
        messages=20,
        rate=0,
        duration=30,
        tls=True,
        tls_ca=str(certs.ca_file),
    )
    report = run_load(config)
    assert report.deliveries_received == report.deliveries_expected == 10 * 9 * 20
    assert report.ok, report.format_text()
    # Without the CA, the system's authorities do not know trustme's: every bot is refused.
    refused = run_load(LoadConfig(port=server.tls_address[1], clients=2, messages=1, tls=True))
    assert refused.joined == 0
    assert all("CERTIFICATE_VERIFY_FAILED" in why for why in refused.join_failures)


@pytest.mark.stress
@pytest.mark.timeout(180)
@pytest.mark.parametrize("protocol", ["text", "json"])
def test_fan_out_100x100_over_tls_exactly_once(make_server, certs, protocol):
    """The reader decrypting and the sender encrypting every connection at once, under load:
    nothing lost, duplicated or reordered."""
    from loadtool import LoadConfig, run_load

    server = make_server(**certs.options(tls_port=0, flood_rate=0, sendq_bytes=64 * 1024 * 1024))
    config = LoadConfig(
        port=server.tls_address[1],
        clients=100,
        messages=100,
        rate=0,
        duration=150,
        join_timeout=60,
        protocol=protocol,
        tls=True,
        tls_ca=str(certs.ca_file),
    )
    report = run_load(config)
    assert report.joined == 100
    assert report.deliveries_received == report.deliveries_expected
    assert (report.lost, report.duplicated, report.out_of_order) == (0, 0, 0)
    assert report.ok, report.format_text()
    assert server.audit.total == 0


@pytest.mark.stress
@pytest.mark.timeout(120)
def test_tls_fan_out_with_threads_switching_as_often_as_possible(
    make_server, certs, fast_switching
):
    from loadtool import LoadConfig, run_load

    server = make_server(**certs.options(tls_port=0, flood_rate=0, sendq_bytes=16 * 1024 * 1024))
    config = LoadConfig(
        port=server.tls_address[1],
        clients=50,
        messages=50,
        rate=0,
        duration=100,
        join_timeout=60,
        tls=True,
        tls_ca=str(certs.ca_file),
    )
    report = run_load(config)
    assert report.deliveries_received == report.deliveries_expected == 50 * 49 * 50
    assert report.ok, report.format_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tls-port", "0"], "need --tls-cert and --tls-key"),
        (["--tls-cert", "c.pem", "--tls-port", "0"], "go together"),
        (["--tls-cert", "c.pem", "--tls-key", "k.pem"], "needs --tls-port or --irc-tls-port"),
        (["--tls-only"], "--tls-only needs"),
        (
            ["--tls-cert", "c", "--tls-key", "k", "--tls-port", "0", "--lock-while-sending"],
            "not with TLS",
        ),
    ],
)
def test_tls_options_that_cannot_work_are_one_line_and_exit_2(capsys, argv, message):
    from chat.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def _s_client(address: tuple[str, int], ca: Path, *options: str) -> Any:
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    return subprocess.Popen(
        [
            *("openssl", "s_client", "-connect", "{}:{}".format(*address)),
            *("-CAfile", str(ca), "-servername", "localhost", *options),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _read_until(client: Any, text: bytes, seen: bytearray, timeout: float = 10) -> None:
    """Reads s_client's output until `text` appears (s_client takes one command per read of
    its input, and drops what came with it: the next line waits for it to say it is done)."""
    import select

    deadline = time.monotonic() + timeout
    while text not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {text!r} in {bytes(seen)!r}"
        if select.select([client.stdout], [], [], left)[0]:
            chunk = os.read(client.stdout.fileno(), 65536)
            assert chunk, f"s_client ended without {text!r}: {bytes(seen)!r}"
            seen += chunk


def test_a_tls13_key_update_mid_session(make_server, certs):
    """`K` in s_client sends a KeyUpdate asking for ours: the server reads on with the new
    keys and answers (OpenSSL does it inside reads and writes; our sender sends what they make).
    """
    server = make_server(**certs.options(tls_port=0))
    listener = TextPeer(server.address, "listener")
    client = _s_client(server.tls_address, certs.ca_file, "-tls1_3")
    try:
        assert client.stdin is not None
        # (s_client takes a line starting with Q, R, B, k or K as a command.)
        client.stdin.write(b"neo\nthe first keys\n")
        client.stdin.flush()
        assert listener.expect("<neo>") == "<neo> the first keys"
        seen = bytearray()
        _read_until(client, b"*** neo joined", seen)
        client.stdin.write(b"K\n")
        client.stdin.flush()
        _read_until(client, b"KEYUPDATE", seen)
        client.stdin.write(b"the next keys\n")
        client.stdin.flush()
        assert listener.expect("<neo>") == "<neo> the next keys"
        listener.send("and the server writes with its new keys\n")
        _read_until(client, b"<listener> and the server writes with its new keys", seen)
        client.stdin.write(b"/quit\n")
        client.stdin.flush()
        _read_until(client, b"*** Goodbye.", seen)
    finally:
        client.kill()
        client.wait()


def test_tls12_renegotiation_is_refused_and_harms_nobody(make_server, certs, caplog):
    caplog.set_level(logging.DEBUG, logger="chat")
    server = make_server(**certs.options(tls_port=0))
    listener = TextPeer(server.address, "listener")
    client = _s_client(server.tls_address, certs.ca_file, "-tls1_2")
    try:
        assert client.stdin is not None
        client.stdin.write(b"neo\nhello\n")
        client.stdin.flush()
        assert listener.expect("<neo>") == "<neo> hello"
        seen = bytearray()
        _read_until(client, b"*** neo joined", seen)
        client.stdin.write(b"R\n")  # the client asks to renegotiate; the server says no
        client.stdin.flush()
        _read_until(client, b"RENEGOTIATING", seen)
        client.stdin.close()
        client.wait(10)
    finally:
        client.kill()
        client.wait()
    wait_until(lambda: server.client_count == 1)
    _no_errors(caplog)
    after = TextPeer(server.tls_address, "after", tls=certs.client_context())
    after.send("the port still works\n")
    assert listener.expect("<after>") == "<after> the port still works"


def test_a_full_server_closes_a_tls_client_without_a_plaintext_line(make_server, certs, caplog):
    server = make_server(**certs.options(tls_port=0, max_clients=1))
    context = certs.client_context()
    first = TextPeer(server.tls_address, "first", tls=context)
    refused = Peer(server.tls_address)
    with pytest.raises(EOFError):
        refused.line()
    assert refused._buffer == b""  # no "! server full" in clear on a TLS port: just the close
    assert first.sock.version()
    assert "refused (server full" in caplog.text


@pytest.mark.stress
@pytest.mark.timeout(120)
def test_the_tls_benchmark_smoke_run():
    """benchmarks/tls.py --quick: the openssl-made certificate, both ports, every measurement;
    the TLS fan-out exactly once. Writes nothing (the committed results stay as they are)."""
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    from tests.benchmarking import ROOT, quick_figures

    before = (ROOT / "benchmarks" / "results" / "tls.json").read_bytes()
    summary = quick_figures("tls.py")
    assert summary["fan_out"]["tls"]["exactly_once"]
    assert summary["fan_out"]["plain"]["exactly_once"]
    assert summary["connect_register_quit"]["tls"]["joined"] == 100
    assert summary["idle"]["tls"]["kib_per_idle_connection"] > 0
    assert (ROOT / "benchmarks" / "results" / "tls.json").read_bytes() == before
