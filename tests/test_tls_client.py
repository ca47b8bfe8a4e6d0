"""chat-client over TLS (#13): a verified certificate, refusals, trust on first use.

Real servers with certificates from `trustme`; the client's own trust logic (client/tls.py).
"""

from __future__ import annotations

import argparse
import datetime
import os
import queue
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from client.connection import ConnectError, Connection, Received
from client.tls import KnownHosts, TlsSettings
from tests.peers import TextPeer, wait_until
from tests.test_tls import Certs

trustme = pytest.importorskip("trustme")

WAIT_S = 10


def _issue(directory: Path, name: str, *identities: str, **dates: Any) -> Certs:
    """Certs whose server certificate has other names or dates."""
    certs = Certs(directory, name)
    issued = certs.ca.issue_cert(*identities, **dates)
    certs.cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(certs.key))
    return certs


def _chat(server: Any, settings: TlsSettings, nick: str, ask: Any = None) -> Connection:
    connection = Connection(*server.tls_address, nick, tls=settings)
    if ask is not None:
        connection = Connection(
            *server.tls_address, nick, tls=TlsSettings(settings.ca_file, settings.known_hosts, ask)
        )
    connection.connect()
    return connection


def test_the_client_talks_over_a_verified_connection(make_server, tmp_path):
    certs = Certs(tmp_path)
    server = make_server(tls_port=0, tls_cert=str(certs.cert), tls_key=str(certs.key))
    listener = TextPeer(server.address, "plain")
    connection = _chat(server, TlsSettings(ca_file=str(certs.ca_file)), "secure")
    events: queue.Queue[object] = queue.Queue()
    connection.start(events.put)
    try:
        assert connection.offer({"type": "message", "text": "sealed"})
        assert listener.expect("<secure>") == "<secure> sealed"
        listener.send("and an answer\n")
        while True:
            event = events.get(timeout=WAIT_S)
            if isinstance(event, Received) and event.event.get("type") == "message":
                assert event.event["text"] == "and an answer"
                break
    finally:
        connection.quit()


@pytest.mark.parametrize(
    ("identities", "dates", "reason"),
    [
        (("chat.example.org",), {}, "mismatch"),
        (
            ("localhost", "127.0.0.1"),
            {"not_after": datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)},
            "expired",
        ),
    ],
    ids=["wrong-host", "expired"],
)
def test_a_wrong_certificate_from_a_trusted_ca_is_refused(
    make_server, tmp_path, identities, dates, reason
):
    certs = _issue(tmp_path, "bad", *identities, **dates)
    server = make_server(tls_port=0, tls_cert=str(certs.cert), tls_key=str(certs.key))
    asked: list[str] = []
    settings = TlsSettings(ca_file=str(certs.ca_file), known_hosts=tmp_path / "known_hosts")
    with pytest.raises(ConnectError, match="not valid") as refused:
        _chat(server, settings, "bob", ask=lambda s, f: asked.append(f) or True)
    assert reason in str(refused.value)
    assert asked == []  # a CA the client trusts said no: nobody is asked to overrule it


def test_another_ca_is_refused_with_tls_ca(make_server, tmp_path):
    certs = Certs(tmp_path)
    other = Certs(tmp_path, "other")
    server = make_server(tls_port=0, tls_cert=str(certs.cert), tls_key=str(certs.key))
    with pytest.raises(ConnectError, match=r"not valid.*--tls-ca"):
        _chat(server, TlsSettings(ca_file=str(other.ca_file)), "bob")


def test_trust_on_first_use_asks_once_then_checks_and_refuses_a_change(make_server, tmp_path):
    certs = Certs(tmp_path)
    server = make_server(tls_port=0, tls_cert=str(certs.cert), tls_key=str(certs.key))
    known = tmp_path / "data" / "known_hosts"
    settings = TlsSettings(known_hosts=known)  # the system's CAs do not know trustme's
    host_port = "{}:{}".format(*server.tls_address)

    # No one to ask (not a terminal): refused, with the fingerprint and what to do.
    with pytest.raises(ConnectError, match="connect once on a terminal") as refused:
        _chat(server, settings, "bob")
    assert server.tls.fingerprint in str(refused.value)
    # Asked, and the person says no: refused, nothing remembered.
    with pytest.raises(ConnectError, match="not trusted"):
        _chat(server, settings, "bob", ask=lambda server_, fingerprint: False)
    assert not known.exists()
    # Asked, and yes: remembered (a private file), the fingerprint is the server's.
    asked: list[tuple[str, str]] = []
    first = _chat(server, settings, "bob", ask=lambda s, f: asked.append((s, f)) or True)
    first.close()
    assert asked == [(host_port, server.tls.fingerprint)]
    assert KnownHosts(known).get(host_port) == server.tls.fingerprint
    assert known.stat().st_mode & 0o077 == 0
    # Later: checked, nobody asked.
    again = _chat(server, settings, "bob", ask=lambda s, f: pytest.fail("asked again"))
    again.close()
    # The server's certificate changes: refused loudly, whatever anyone would answer.
    renewed = Certs(tmp_path, "renewed")
    # The same server, a new certificate (a reload).
    Path(server.tls.cert_file).write_bytes(renewed.cert.read_bytes())
    Path(server.tls.key_file).write_bytes(renewed.key.read_bytes())
    assert server.reload_tls()
    with pytest.raises(ConnectError, match="HAS CHANGED") as changed:
        _chat(server, settings, "bob", ask=lambda s, f: True)
    assert str(known) in str(changed.value)
    assert KnownHosts(known).get(host_port) != server.tls.fingerprint  # not overwritten


def test_chat_client_command_with_tls_ca_and_host_port(make_server, tmp_path):
    """The command line: `chat-client NICK --host HOST:PORT --tls-ca FILE`, piped input."""
    certs = Certs(tmp_path)
    server = make_server(tls_port=0, tls_cert=str(certs.cert), tls_key=str(certs.key))
    listener = TextPeer(server.address, "plain")
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "client",
            "piper",
            "--host",
            "{}:{}".format(*server.tls_address),
            "--tls-ca",
            str(certs.ca_file),
        ],
        input="over the command line\n",
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert listener.expect("<piper>") == "<piper> over the command line"
    # Without --tls-ca and without a terminal: refused, not silently trusted.
    refused = subprocess.run(
        [
            *(sys.executable, "-m", "client", "piper2", "--tls", "--host", "127.0.0.1"),
            *("--port", str(server.tls_address[1])),
        ],
        input="never sent\n",
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert refused.returncode == 1
    assert "connect once on a terminal" in refused.stderr


def test_a_certificate_changed_while_reconnecting_stops_the_client_loudly(tmp_path):
    from chat.config import ServerConfig
    from chat.server import ChatServer
    from client.connection import Notice

    certs, other = Certs(tmp_path), Certs(tmp_path, "other")
    settings = TlsSettings(known_hosts=tmp_path / "known_hosts")
    first = ChatServer(
        ServerConfig(port=0, tls_port=0, tls_cert=str(certs.cert), tls_key=str(certs.key))
    ).start()
    port = first.tls_address[1]
    connection = Connection(
        "127.0.0.1",
        port,
        "bob",
        tls=TlsSettings(settings.ca_file, settings.known_hosts, lambda s, f: True),
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
    )
    connection.connect()
    events: queue.Queue[object] = queue.Queue()
    connection.start(events.put)
    first.stop()  # the link drops; the client reconnects to ...
    second = ChatServer(  # ... a server on the same port with another certificate
        ServerConfig(port=0, tls_port=port, tls_cert=str(other.cert), tls_key=str(other.key))
    ).start()
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            assert time.monotonic() < deadline, "never told that the certificate changed"
            event = events.get(timeout=WAIT_S)
            if isinstance(event, Notice) and "HAS CHANGED" in event.text:
                assert event.error
                break
        connection._threads[0].join(WAIT_S)  # the session thread stops trying
        assert not connection._threads[0].is_alive()
        assert connection.status.state == "disconnected"
        wait_until(lambda: second.client_count == 0)  # the refused connection is closed
    finally:
        connection.close()
        second.stop()


def test_host_port_forms() -> None:
    from client.__main__ import _split_host

    assert _split_host("chat.example.org") == ("chat.example.org", None)
    assert _split_host("chat.example.org:8889") == ("chat.example.org", 8889)
    assert _split_host("192.168.1.10:8889") == ("192.168.1.10", 8889)
    assert _split_host("[::1]:8889") == ("::1", 8889)
    assert _split_host("[::1]") == ("::1", None)
    assert _split_host("::1") == ("::1", None)  # a bare IPv6 address has no port
    with pytest.raises(argparse.ArgumentTypeError):
        _split_host("host:http")


def test_a_tls_ca_file_that_cannot_be_read_is_named_not_blamed_on_the_server(tmp_path):
    """`--tls-ca` naming a missing file once said `cannot connect to 127.0.0.1:8889: No such
    file or directory`, as if the server were the problem; it is a usage error (exit 2)."""
    result = subprocess.run(
        [sys.executable, "-m", "client", "alice", "--tls-ca", str(tmp_path / "nope.pem")],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert result.returncode == 2, result.stderr
    assert "--tls-ca" in result.stderr
    assert "nope.pem" in result.stderr
    assert "cannot connect" not in result.stderr
