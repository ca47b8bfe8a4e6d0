"""The connection layer against a real in-process server, through a proxy that can fake failures.

The proxy stands between client and server so a test can break the client's side of a link
while the server's side stays open (the server still thinks the old connection holds the
nickname: a "ghost"), or swallow what the client sends (a line written but never delivered).
"""

from __future__ import annotations

import contextlib
import queue
import random
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from chat.config import ServerConfig
from chat.server import ChatServer
from client.connection import (
    ConnectError,
    Connection,
    Event,
    Notice,
    Pacer,
    Received,
    StatusChanged,
    alternate_nicks,
    backoff_delay,
)
from tests.peers import JsonPeer

WAIT_S = 5.0


class Proxy:
    """A TCP forwarder on 127.0.0.1 whose links can be cut on one side or made to drop data.

    Also used by tests/test_client_ui.py.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()[:2]
        self.links: list[tuple[socket.socket, socket.socket]] = []
        self.every_link: list[tuple[socket.socket, socket.socket]] = []
        self.swallow = threading.Event()  # drop what clients send instead of forwarding it
        self.swallowed = bytearray()
        # While clear, new connections are accepted but held before reaching the server.
        self.gate = threading.Event()
        self.gate.set()
        # While set, new connections are accepted and closed at once (a server that is down).
        self.refuse = threading.Event()
        self._swallowed_more = threading.Condition()
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._start(self._accept_loop)

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name="test-proxy")
        thread.start()
        self.threads.append(thread)

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refuse.is_set() or not self.gate.wait(WAIT_S):
                client.close()
                continue
            upstream = socket.create_connection(self.target, timeout=WAIT_S)
            upstream.settimeout(None)
            with self._lock:
                self.links.append((client, upstream))
                self.every_link.append((client, upstream))
            self._start(self._pump, client, upstream, True)
            self._start(self._pump, upstream, client, False)

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        # When the server closes, the client is told; when the client's side is cut, the server
        # is not (that is the ghost).
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                if not from_client:
                    _shutdown(sink)
                return
            if from_client and self.swallow.is_set():
                with self._swallowed_more:
                    self.swallowed += data
                    self._swallowed_more.notify_all()
                continue
            with contextlib.suppress(OSError):
                sink.sendall(data)

    def wait_swallowed(self, marker: bytes) -> None:
        """Block until `marker` is among the bytes swallowed (written by the client, lost)."""
        with self._swallowed_more:
            assert self._swallowed_more.wait_for(lambda: marker in self.swallowed, WAIT_S)

    def cut_client_sides(self) -> list[socket.socket]:
        """Break every client-side socket; return the server-side ones, still open (ghosts)."""
        with self._lock:
            links, self.links = self.links, []
        for client, _ in links:
            client.shutdown(socket.SHUT_RDWR)
        return [upstream for _, upstream in links]

    def close(self) -> None:
        _shutdown(self.listener)  # wakes accept(); close() alone does not
        self.listener.close()
        with self._lock:
            links, self.every_link = self.every_link, []
        for client, upstream in links:
            _shutdown(client)
            _shutdown(upstream)
        for thread in self.threads:
            thread.join(WAIT_S)
        for client, upstream in links:
            client.close()
            upstream.close()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    with ChatServer(ServerConfig(port=0, flood_rate=0)) as server:
        yield server


@pytest.fixture
def proxy(chat_server: ChatServer) -> Iterator[Proxy]:
    forwarder = Proxy(chat_server.address)
    yield forwarder
    forwarder.close()


class Events:
    """What a connection told its listener, waited for with a timeout."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Event] = queue.Queue()
        self.seen: list[Event] = []

    def wait(self, predicate: Callable[[Event], bool]) -> Event:
        for event in self.seen:
            if predicate(event):
                return event
        while True:
            try:
                event = self.queue.get(timeout=WAIT_S)
            except queue.Empty:
                raise AssertionError(f"no such event; saw {self.seen!r}") from None
            self.seen.append(event)
            if predicate(event):
                return event

    def notice(self, text: str) -> Event:
        return self.wait(lambda e: isinstance(e, Notice) and text in e.text)

    def received(self, kind: str) -> Received:
        event = self.wait(lambda e: isinstance(e, Received) and e.event["type"] == kind)
        assert isinstance(event, Received)
        return event


@pytest.fixture
def events() -> Events:
    return Events()


def connect(address: tuple[str, int], nick: str, events: Events, **options: float) -> Connection:
    connection = Connection(
        *address,
        nick,
        **options,
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
        send_rate_lines_s=10_000,  # the test server has no flood limit
        send_burst_lines=1_000,
    )
    connection.connect()
    connection.start(events.queue.put)
    return connection


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, rng, 1.0, 30.0) for n in range(8)]
    for attempt, delay in enumerate(delays):
        ceiling = min(30.0, 2.0**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert delays[6] > delays[0]
    assert backoff_delay(3, random.Random(1), 1, 30) != backoff_delay(3, random.Random(2), 1, 30)


def test_alternate_nicks_stay_valid_length() -> None:
    assert list(alternate_nicks("alice"))[:3] == ["alice_", "alice__", "alice1"]
    assert all(len(nick) <= 16 for nick in alternate_nicks("a" * 16))


def test_pacer_allows_a_burst_then_paces() -> None:
    now = [0.0]
    pacer = Pacer(rate=5.0, burst=10.0, clock=lambda: now[0])
    for _ in range(10):
        assert pacer.delay_s() == 0
        pacer.take(1)
    assert pacer.delay_s() == pytest.approx(0.2)
    now[0] += 0.2
    assert pacer.delay_s() == 0


def test_unreachable_server_raises_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectError, match=rf"cannot connect to 127\.0\.0\.1:{port}"):
        Connection("127.0.0.1", port, "bob").connect()


class SilentServer:
    """A real listening socket that accepts connections and never writes a byte."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, name="test-silent-server")
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(conn)  # held open, never written to

    def close(self) -> None:
        _shutdown(self.listener)  # wakes accept()
        self.listener.close()
        self.thread.join(WAIT_S)
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_a_server_that_accepts_but_never_greets_is_named_as_such(
    silent_server: SilentServer,
) -> None:
    port = silent_server.address[1]
    progress: list[str] = []
    connection = Connection("127.0.0.1", port, "bob", greeting_timeout_s=0.2)
    with pytest.raises(ConnectError) as raised:
        connection.connect(progress=progress.append)
    # Said at once, before the wait: the TCP connection itself succeeded.
    assert progress == [f"connected to 127.0.0.1:{port}, waiting for the server's greeting…"]
    assert str(raised.value) == (
        f"127.0.0.1:{port} accepted the connection but sent no greeting within 0.2 s"
        " (is it a chat server?)"
    )
    assert "cannot connect" not in str(raised.value)


def test_server_full_is_reported() -> None:
    with ChatServer(ServerConfig(port=0, max_clients=1)) as server:
        first = JsonPeer(server.address, "first")
        with pytest.raises(ConnectError, match="server full"):
            Connection(*server.address, "bob").connect()
        first.close()


def test_taken_nick_is_asked_again(chat_server: ChatServer) -> None:
    holder = JsonPeer(chat_server.address, "alice")
    reasons: list[str] = []
    connection = Connection(*chat_server.address, "alice")

    def ask(reason: str) -> str | None:
        reasons.append(reason)
        return "Alice" if len(reasons) == 1 else "alice2"  # same nick ignoring case: taken too

    status = connection.connect(ask)
    assert status.nick == "alice2"
    assert reasons == ["nickname alice is taken", "nickname Alice is taken"]
    connection.quit()
    holder.close()


def test_ghost_holds_the_nick_so_an_alternate_is_taken_then_ours_back(
    chat_server: ChatServer, proxy: Proxy, events: Events
) -> None:
    connection = connect(proxy.address, "alice", events)
    bob = JsonPeer(chat_server.address, "bob")
    ghosts = proxy.cut_client_sides()  # the server still has alice's old connection
    events.notice("connection lost")
    events.notice("alice is still held by the old connection; you are alice_")
    assert bob.expect_type("join")["nick"] == "alice_"
    assert connection.status.nick == "alice_"
    for ghost in ghosts:  # the server finally notices the old connection is gone
        ghost.shutdown(socket.SHUT_RDWR)
    events.notice("alice is free again; taking it back")
    rename = bob.expect_type("rename")
    assert (rename["old"], rename["new"]) == ("alice_", "alice")
    events.wait(lambda e: isinstance(e, Received) and e.status.nick == "alice")
    connection.quit()


def test_lines_lost_with_the_link_are_sent_again(
    chat_server: ChatServer, proxy: Proxy, events: Events
) -> None:
    connection = connect(proxy.address, "alice", events)
    bob = JsonPeer(chat_server.address, "bob")
    assert connection.barrier(WAIT_S)
    proxy.swallow.set()  # what alice writes now never reaches the server: no pong comes back
    assert connection.offer({"type": "message", "text": "into the void"})
    proxy.wait_swallowed(b"into the void")
    proxy.swallow.clear()
    for ghost in proxy.cut_client_sides():
        ghost.shutdown(socket.SHUT_RDWR)
    events.notice("reconnected")
    assert connection.barrier(WAIT_S)
    assert bob.expect_type("message")["text"] == "into the void"
    connection.quit()


def test_quit_closes_and_reports_lines_never_sent(
    chat_server: ChatServer, proxy: Proxy, events: Events
) -> None:
    connection = connect(proxy.address, "alice", events)
    assert connection.offer({"type": "message", "text": "hello"})
    assert connection.barrier(WAIT_S)
    assert connection.quit("bye") == 0
    assert connection.status.state == "disconnected"
    assert not connection.offer({"type": "message", "text": "too late"})


@pytest.mark.usefixtures("fast_switching")
def test_no_line_is_lost_across_repeated_link_failures(
    chat_server: ChatServer, proxy: Proxy, events: Events
) -> None:
    connection = connect(proxy.address, "alice", events)
    bob = JsonPeer(chat_server.address, "bob")
    sent: list[str] = []
    for round_number in range(5):
        for n in range(10):
            sent.append(f"r{round_number} n{n}")
            assert connection.offer({"type": "message", "text": sent[-1]})
            if n == 5:
                proxy.swallow.set()  # from about here, written lines vanish
        proxy.wait_swallowed(sent[-1].encode())  # the last lines were written, and lost
        proxy.swallow.clear()
        events.seen.clear()  # only a reconnect after this cut counts
        for ghost in proxy.cut_client_sides():
            ghost.shutdown(socket.SHUT_RDWR)
        events.notice("reconnected")  # the next round's hello must not be swallowed
    assert connection.barrier(WAIT_S)
    received: list[str] = []
    while len(set(received)) < len(sent):
        event = bob.expect_type("message")
        received.append(event["text"])
    first_seen = list(dict.fromkeys(received))
    assert first_seen == sent  # every line, in order (a line may come twice: at-least-once)
    connection.quit()


def test_a_silent_dead_link_is_found_by_keepalive(proxy: Proxy, events: Events) -> None:
    connection = connect(proxy.address, "alice", events, keepalive_s=0.1)
    proxy.gate.clear()  # hold the reconnect until the swallowing stops
    proxy.swallow.set()  # the link stays open but nothing gets through: pings go unanswered
    events.notice("connection lost: no answer from the server")
    proxy.swallow.clear()
    proxy.gate.set()
    events.notice("reconnected")
    assert connection.barrier(WAIT_S)
    connection.quit()


def test_rooms_are_joined_again_after_a_reconnect(
    chat_server: ChatServer, proxy: Proxy, events: Events
) -> None:
    connection = connect(proxy.address, "alice", events)
    bob = JsonPeer(chat_server.address, "bob")
    bob.send_json({"type": "join", "room": "#rust"})
    bob.expect_type("room")
    assert connection.offer({"type": "join", "room": "#rust"})
    events.received("room")
    proxy.gate.clear()  # hold the reconnect until bob's room events are read
    for ghost in proxy.cut_client_sides():
        ghost.shutdown(socket.SHUT_RDWR)
    events.notice("connection lost")
    assert bob.expect_type("leave")["nick"] == "alice"
    events.seen.clear()
    proxy.gate.set()
    events.notice("reconnected")
    assert connection.offer({"type": "message", "room": "#rust", "text": "back in rust"})
    assert connection.barrier(WAIT_S)
    assert connection.status.rooms == ("#lobby", "#rust")
    said = bob.expect_type("message")
    assert (said["room"], said["text"]) == ("#rust", "back in rust")
    connection.quit()


def test_reconnect_attempts_update_the_status_instead_of_printing_a_line_each(
    proxy: Proxy, events: Events
) -> None:
    connection = connect(proxy.address, "alice", events)
    events.received("welcome")
    proxy.refuse.set()  # from now on every attempt fails: the server seems down
    for ghost in proxy.cut_client_sides():
        ghost.shutdown(socket.SHUT_RDWR)

    def attempt(number: int) -> Callable[[Event], bool]:
        return lambda e: isinstance(e, StatusChanged) and e.status.attempt >= number

    failing = events.wait(attempt(4))
    assert isinstance(failing, StatusChanged)
    assert failing.status.state == "reconnecting"
    assert failing.status.last_error  # why the last attempt failed, for the status bar
    proxy.refuse.clear()  # the server is back
    events.notice("reconnected to")
    notices = [e.text for e in events.seen if isinstance(e, Notice)]
    assert len(notices) == 2, notices  # one line when lost, one when back
    assert notices[0].startswith("connection lost")
    assert notices[1].startswith(f"reconnected to 127.0.0.1:{proxy.address[1]} after ")
    assert connection.status.attempt == 0
    assert connection.status.last_error == ""
    connection.quit()
